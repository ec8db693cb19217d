"""fine_tune library: loss goes down, the saved model loads and embeds, prompts per task type, resume
from a checkpoint (the last complete one), the arguments of a training process, and every bad input fails
before training. Small slices, a few CPU steps. Killed processes and two DDP processes:
test_fine_tune_processes.py."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import TrainerCallback

from embedpipe.fine_tune import (
    BASE_LEARNING_RATE,
    CHECKPOINTS_DIR,
    METADATA_FILE,
    FineTuneError,
    FineTuneSettings,
    fine_tune,
    last_checkpoint,
    training_pairs,
)
from embedpipe.fine_tune.distributed import worker_arguments, worker_parser
from embedpipe.models import ModelLoadError, packaged_model_path
from embedpipe.prompts import resolve_prompts
from tests.conftest import prepare_short_scifact_mini

GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
FAST = dict(max_seq_length=48, seed=7)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    """scifact-mini prepared once: Parquet corpus, queries and train labels (132 pairs), texts cut short."""
    return prepare_short_scifact_mini(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def gemma_style_model(tmp_path_factory) -> Path:
    """The packaged MiniLM with EmbeddingGemma's prompts in its config."""
    folder = tmp_path_factory.mktemp("models") / "gemma-style"
    shutil.copytree(packaged_model_path(), folder)
    config_path = folder / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["prompts"] = GEMMA_PROMPTS
    config_path.write_text(json.dumps(config))
    return folder


def pair_loss(model_path: str, pairs: pd.DataFrame, scale: float = 20.0) -> float:
    """MultipleNegativesRankingLoss of a fixed set of pairs (each anchor against every positive)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = FAST["max_seq_length"]
    a = model.encode(pairs["anchor"].tolist(), prompt="", normalize_embeddings=True)
    p = model.encode(pairs["positive"].tolist(), prompt="", normalize_embeddings=True)
    logits = scale * a @ p.T
    logits -= logits.max(axis=1, keepdims=True)
    return float(-np.mean(np.diag(logits) - np.log(np.exp(logits).sum(axis=1))))


def test_loss_goes_down_and_the_saved_model_loads_and_embeds(prepared, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "tuned"
    fine_tune(**prepared, output_dir=str(out), batch_size=16, train_steps=12, learning_rate_multiplier=5, **FAST)

    pairs = (
        training_pairs(
            pd.read_parquet(prepared["corpus_path"]),
            pd.read_parquet(prepared["queries_path"]),
            pd.read_parquet(prepared["train_labels_path"]),
            resolve_prompts("RETRIEVAL_QUERY", {}),
        )
        .drop_duplicates("anchor")
        .head(64)
    )
    before, after = pair_loss(str(packaged_model_path()), pairs), pair_loss(str(out), pairs)
    assert after < before * 0.9, (before, after)

    assert (out / "model.safetensors").is_file() and not (out / CHECKPOINTS_DIR).exists()
    vectors = SentenceTransformer(str(out), device="cpu").encode(["a query", "a document"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["base_model"] == "default" and metadata["task_type"] == "RETRIEVAL_QUERY"
    assert metadata["train_steps"] == 12 and metadata["dimension"] == 384 and metadata["precision"] == "fp32"
    assert metadata["learning_rate"] == pytest.approx(5 * BASE_LEARNING_RATE)  # no validation labels: the low base
    assert metadata["metrics"]["samples_per_second"] > 0 and metadata["seconds"] > 0
    assert metadata["prompts"] == {"task_type": "RETRIEVAL_QUERY", "query": "", "document": ""}


def test_output_dimensionality_saves_a_smaller_matryoshka_model(prepared, tmp_path):
    from sentence_transformers import SentenceTransformer

    result = fine_tune(
        **prepared, output_dir=str(tmp_path / "m"), batch_size=8, train_steps=2, output_dimensionality=64, **FAST
    )
    assert result.metadata["dimension"] == 64 and result.metadata["loss"].startswith("MatryoshkaLoss")
    vectors = SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(["x"])
    assert vectors.shape == (1, 64) and abs(float(np.linalg.norm(vectors)) - 1) < 1e-4


@pytest.mark.parametrize(
    "task_type, anchor_prefix, positive_prefix",
    [
        ("RETRIEVAL_QUERY", "task: search result | query: ", "title: {title} | text: "),
        ("QUESTION_ANSWERING", "task: question answering | query: ", "title: {title} | text: "),
        # symmetric: documents get the query-side prompt and are embedded as "{title} {text}"
        ("SEMANTIC_SIMILARITY", "task: sentence similarity | query: ", "task: sentence similarity | query: {title} "),
    ],
)
def test_prompts_are_applied_per_task_type(prepared, gemma_style_model, task_type, anchor_prefix, positive_prefix):
    from sentence_transformers import SentenceTransformer

    corpus = pd.read_parquet(prepared["corpus_path"])
    queries = pd.read_parquet(prepared["queries_path"])
    labels = pd.read_parquet(prepared["train_labels_path"]).head(3)
    prompts = resolve_prompts(task_type, SentenceTransformer(str(gemma_style_model), device="cpu").prompts)
    pairs = training_pairs(corpus, queries, labels, prompts)
    for row, label in zip(pairs.itertuples(), labels.itertuples()):
        query = queries.set_index("_id").loc[label[1], "text"]
        doc = corpus.set_index("_id").loc[label[2]]
        assert row.anchor == anchor_prefix + query
        assert row.positive == positive_prefix.format(title=doc["title"].strip() or "none") + doc["text"]


def test_a_model_with_prompts_trains_on_formatted_text_and_keeps_its_prompts(prepared, gemma_style_model, tmp_path):
    seen = []

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            dataset = train_dataloader.dataset
            seen.extend(zip(dataset["anchor"][:3], dataset["positive"][:3]))

    result = fine_tune(
        **prepared,
        output_dir=str(tmp_path / "g"),
        base_model=str(gemma_style_model),
        task_type="question_answering",
        batch_size=8,
        train_steps=1,
        callbacks=[Capture()],
        **FAST,
    )
    assert len(seen) == 3
    for anchor, positive in seen:  # the rows the trainer sees: our prompts, once
        assert anchor.startswith("task: question answering | query: ") and anchor.count("task:") == 1
        assert (
            positive.startswith("title: ")
            and " | text: " in positive
            and not positive.startswith("title: none | text: title:")
        )
    assert result.metadata["prompts"]["query"] == "task: question answering | query: "
    assert result.metadata["prompts"]["document"] == "title: none | text: "
    saved = json.loads((tmp_path / "g" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == GEMMA_PROMPTS  # later stages resolve the same prompts from the tuned model


def test_score_zero_is_never_a_positive(prepared):
    corpus = pd.read_parquet(prepared["corpus_path"])
    queries = pd.read_parquet(prepared["queries_path"])
    labels = pd.read_parquet(prepared["train_labels_path"]).head(4).copy()
    labels.loc[labels.index[:2], "score"] = 0
    assert len(training_pairs(corpus, queries, labels, resolve_prompts("RETRIEVAL_QUERY", {}))) == 2


class StopAfter(TrainerCallback):
    """Stands in for a preempted machine: the process dies after step `step` was checkpointed."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("preempted")


def test_a_restarted_run_resumes_from_the_last_checkpoint(prepared, tmp_path, caplog):
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fine_tune(
            **prepared,
            output_dir=str(out),
            batch_size=8,
            train_steps=4,
            save_steps=2,
            callbacks=[StopAfter(2)],
            **FAST,
        )
    assert (out / CHECKPOINTS_DIR / "checkpoint-2").is_dir() and not (out / METADATA_FILE).exists()

    with caplog.at_level(logging.INFO, logger="embedpipe.progress"):
        result = fine_tune(**prepared, output_dir=str(out), batch_size=8, train_steps=4, save_steps=2, **FAST)
    assert result.metrics["resumed_from_step"] == 2
    # The progress line counts this run's steps (its rate and ETA are this run's) and ends with the last loss.
    last = [record.getMessage() for record in caplog.records if record.name == "embedpipe.progress"][-1]
    assert last.startswith("[progress] training (resumed at step 2): 2/2 steps (100%), "), last
    assert re.search(r", loss \d+\.\d{4}$", last), last
    assert result.metrics["steps_this_run"] == 2 and result.metrics["train_steps"] == 4
    assert [step for step, _ in result.metadata["loss_curve"]][-2:] == [3, 4]


def test_the_last_checkpoint_is_the_newest_complete_one(tmp_path):
    assert last_checkpoint(tmp_path) is None
    folder = tmp_path / CHECKPOINTS_DIR
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (10, None), (12, '{"global_step": 8}')):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
        if state is not None:  # trainer_state.json is the last file the Trainer writes
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(folder / "checkpoint-2")
    (folder / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10}')
    assert last_checkpoint(tmp_path) == str(folder / "checkpoint-10")


def test_the_arguments_of_a_training_process_carry_every_setting(capsys):
    settings = FineTuneSettings(task_type="question_answering", batch_size=4, iterations=3, processes=2, seed=1)
    arguments = worker_arguments("c", "q", "t", "out", settings, validation_labels_path="v", base_model_path="/m")
    parsed = worker_parser().parse_args(arguments)
    assert parsed.settings == settings and (parsed.corpus, parsed.validation_labels) == ("c", "v")
    assert parsed.base_model_path == "/m"
    with pytest.raises(SystemExit):
        worker_parser().parse_args([*arguments[:8], "--settings", '{"train_steps": -1}'])
    assert "train_steps must be >= 1" in capsys.readouterr().err


def test_iterations_is_the_older_name_of_train_steps(prepared, tmp_path):
    result = fine_tune(**prepared, output_dir=str(tmp_path / "it"), batch_size=8, iterations=1, **FAST)
    assert result.metrics["train_steps"] == 1


def not_a_sentence_transformers_model(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda tmp: {"base_model": str(tmp / "no-such-model")}, ModelLoadError, "does not exist"),
        (
            lambda tmp: {"base_model": not_a_sentence_transformers_model(tmp)},
            FineTuneError,
            "not a sentence-transformers model",
        ),
        (lambda tmp: {"output_dimensionality": 1024}, FineTuneError, "larger than the dimension 384"),
        (lambda tmp: {"task_type": "RETRIEVAL"}, FineTuneError, "unknown task_type 'RETRIEVAL'"),
        (lambda tmp: {"batch_size": 500}, FineTuneError, "fewer than one batch of batch_size=500"),
        (lambda tmp: {"batch_size": 1}, FineTuneError, "batch_size must be >= 2"),
        (lambda tmp: {"train_steps": -3}, FineTuneError, "train_steps must be >= 1"),
        (lambda tmp: {"processes": 0}, FineTuneError, "processes must be >= 1"),
        (lambda tmp: {"processes": 64, "device": "cuda"}, FineTuneError, "processes=64, but .* GPUs are visible"),
        (lambda tmp: {"processes": 2, "callbacks": [TrainerCallback()]}, FineTuneError, "callbacks run in one"),
    ],
    ids=[
        "missing-model",
        "not-sentence-transformers",
        "dimension-too-large",
        "unknown-task-type",
        "too-few-pairs",
        "batch-of-one",
        "negative-steps",
        "no-process",
        "more-processes-than-gpus",
        "callbacks-in-processes",
    ],
)
def test_bad_input_fails_clearly_before_training(prepared, tmp_path, change, error, message):
    out = tmp_path / "out"
    arguments = dict(batch_size=8, train_steps=1, **FAST) | change(tmp_path)
    with pytest.raises(error, match=message):
        fine_tune(**prepared, output_dir=str(out), **arguments)
    assert not (out / CHECKPOINTS_DIR).exists() and not (out / "model.safetensors").exists()


def test_hard_negatives_and_a_validation_loss(prepared, tmp_path):
    validation = tmp_path / "validation_labels.parquet"
    pd.read_parquet(prepared["train_labels_path"]).tail(16).to_parquet(validation)
    result = fine_tune(
        **prepared,
        output_dir=str(tmp_path / "hn"),
        validation_labels_path=str(validation),
        batch_size=8,
        train_steps=2,
        mine_hard_negatives=True,
        **FAST,
    )
    assert result.metadata["hard_negatives"] is True
    assert result.metrics["validation_loss"] > 0
