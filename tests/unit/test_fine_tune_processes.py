"""fine_tune as real processes: a run killed (SIGKILL) mid-way resumes from its last checkpoint when
started again, and two gloo processes on the CPU train one model with DistributedDataParallel. Both start
`python -m embedpipe.fine_tune` the way a retried Vertex task and torchrun do; tiny batches, a few steps."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedpipe.fine_tune import CHECKPOINTS_DIR, METADATA_FILE, FineTuneSettings, fine_tune, last_checkpoint
from embedpipe.fine_tune.distributed import worker_arguments
from tests.conftest import prepare_short_scifact_mini

TINY = dict(batch_size=4, max_seq_length=24, seed=7)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    """scifact-mini prepared once (132 train pairs), texts cut to 40 words."""
    return prepare_short_scifact_mini(tmp_path_factory.mktemp("prepared"))


def fine_tune_command(prepared: dict[str, str], output: Path, settings: FineTuneSettings) -> list[str]:
    """`python -m embedpipe.fine_tune ...`: what a (retried) task runs."""
    paths = [prepared["corpus_path"], prepared["queries_path"], prepared["train_labels_path"], str(output)]
    return [sys.executable, "-m", "embedpipe.fine_tune", *worker_arguments(*paths, settings)]


def child_environment() -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def encodes(model_dir: Path, dimension: int = 384) -> bool:
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(model_dir), device="cpu").encode(["a query", "a document"])
    return vectors.shape == (2, dimension) and bool(np.isfinite(vectors).all())


def test_a_run_killed_mid_way_resumes_from_its_last_checkpoint_and_ends_like_an_uninterrupted_one(prepared, tmp_path):
    from safetensors.numpy import load_file

    settings = FineTuneSettings(train_steps=4, save_steps=2, **TINY)
    out = tmp_path / "tuned"
    command = fine_tune_command(prepared, out, settings)

    # First attempt: killed, like a preempted machine, as soon as a checkpoint is complete.
    with open(tmp_path / "first.log", "wb") as first_log:
        first = subprocess.Popen(command, stdout=first_log, stderr=subprocess.STDOUT, env=child_environment())
        deadline = time.monotonic() + 600
        while last_checkpoint(out) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    killed_at = last_checkpoint(out)
    assert killed_at is not None, (tmp_path / "first.log").read_text()[-3000:]
    killed_step = int(Path(killed_at).name.rpartition("-")[2])
    assert killed_step < settings.train_steps and not (out / METADATA_FILE).exists()

    # Second attempt, same command and folder: resumes there and trains only the remaining steps.
    second = subprocess.run(command, capture_output=True, text=True, env=child_environment(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {killed_at}" in second.stderr
    metadata = json.loads((out / METADATA_FILE).read_text())
    metrics = metadata["metrics"]
    assert metrics["train_steps"] == settings.train_steps == metadata["train_steps"]
    assert metrics["resumed_from_step"] == killed_step
    assert metrics["steps_this_run"] == settings.train_steps - killed_step < settings.train_steps
    assert [step for step, _ in metadata["loss_curve"]] == list(range(1, settings.train_steps + 1))
    assert not (out / CHECKPOINTS_DIR).exists() and encodes(out)

    # An uninterrupted run: same steps, same losses, same model (weights, optimiser, RNG and data order resumed).
    whole = fine_tune(**prepared, output_dir=str(tmp_path / "whole"), settings=settings)
    assert np.allclose(
        [loss for _, loss in metadata["loss_curve"]], [loss for _, loss in whole.metadata["loss_curve"]], rtol=1e-4
    )
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(np.allclose(resumed[name], uninterrupted[name], atol=1e-5) for name in resumed)


def test_two_gloo_processes_train_one_model_with_distributed_data_parallel(
    prepared, tmp_path, capfd, caplog, monkeypatch
):
    monkeypatch.setenv("EMBEDPIPE_VERBOSE", "1")  # sentence-transformers' own lines, quiet by default, say who saved
    out = tmp_path / "ddp"
    validation = tmp_path / "validation_labels.parquet"
    pd.read_parquet(prepared["train_labels_path"]).tail(16).to_parquet(validation)
    settings = FineTuneSettings(train_steps=4, save_steps=4, processes=2, keep_checkpoints=True, **TINY)
    with caplog.at_level(logging.INFO, logger="embedpipe.fine_tune"):
        result = fine_tune(**prepared, output_dir=str(out), settings=settings, validation_labels_path=str(validation))
    log = capfd.readouterr().err  # the processes' logs

    # torchrun started two processes; both trained every step of one run; rank 0 alone wrote the model.
    assert "torch.distributed.run --standalone --nproc-per-node=2 -m embedpipe.fine_tune" in caplog.text
    for rank in (0, 1):
        assert (
            f"rank {rank}/2 fine_tune: default on 132 pairs" in log
            and f"rank {rank}/2 [progress] training: 4/4 steps (100%)" in log
        )
    assert log.count("fine_tune: done,") == 1 and "rank 0/2 fine_tune: done," in log
    # sentence-transformers' log line of a checkpoint's model (see trainer.build_trainer: rank 0 only).
    assert "rank 0/2 Saving model checkpoint" in log and "rank 1/2 Saving model" not in log
    checkpoint = out / CHECKPOINTS_DIR / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()

    metrics = result.metrics
    assert result.metadata["processes"] == 2 and result.metadata["batch_size"] == 4
    assert metrics["train_steps"] == 4 and metrics["steps_this_run"] == 4 and metrics["resumed_from_step"] == 0
    assert metrics["samples_per_second"] == pytest.approx(metrics["steps_per_second"] * 8, rel=0.05)  # 2 × 4 a step
    losses = [loss for _, loss in result.metadata["loss_curve"]]
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)
    assert 0 < metrics["train_loss_mean"] < 10 and 0 < metrics["validation_loss"] < 10
    assert encodes(out)
