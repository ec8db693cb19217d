"""Training in several processes, one per GPU: DistributedDataParallel, launched with torchrun.

With `FineTuneSettings.processes` > 1, `fine_tune` checks every input in the calling process (on the CPU),
then runs torchrun and waits for it:

    python -m torch.distributed.run --standalone --nproc-per-node N -m embedpipe.fine_tune \\
        --corpus ... --queries ... --train-labels ... --output-dir ... --settings '{...}'

Each of the N processes runs the same sentence-transformers Trainer. The transformers Trainer reads
torchrun's LOCAL_RANK, RANK and WORLD_SIZE, puts process k on `cuda:k` and wraps the model in
DistributedDataParallel (NCCL on GPUs, gloo on the CPU). Every process takes `batch_size` pairs per step,
N × `batch_size` in all (what DataParallel trained on before), and the ranking loss gathers the embeddings
of all processes, so the in-batch negatives of a pair are the whole step's. Batches are kept full (the last,
smaller batch of an epoch is dropped), because gathering needs the same batch size in every process.
Rank 0 alone writes the checkpoints (each process adds its own RNG state), the model and
`embedpipe_training.json`; `fine_tune` reads the result back from that file.

A process started by a launcher (LOCAL_RANK set) trains in itself and never launches again, so
`torchrun --nproc-per-node 4 -m embedpipe.fine_tune ...` by hand works too. A preempted distributed run
resumes like a single one: every process finds the same last checkpoint.

Example:
    >>> from embedpipe.fine_tune import FineTuneSettings
    >>> worker_arguments("c.parquet", "q.parquet", "t.parquet", "out", FineTuneSettings(processes=2))[:4]
    ['--corpus', 'c.parquet', '--queries', 'q.parquet']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys

from embedpipe.fine_tune.settings import FineTuneError, FineTuneSettings

log = logging.getLogger(__package__)

#: The module each process runs (`python -m embedpipe.fine_tune`).
PROCESS_MODULE = "embedpipe.fine_tune"


def launched() -> bool:
    """Whether a launcher (torchrun, `accelerate launch`) started this process: LOCAL_RANK is set."""
    return "LOCAL_RANK" in os.environ


def rank() -> int:
    """This process's rank in a launched run; 0 in a process of its own."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """The number of processes of a launched run; 1 in a process of its own."""
    return int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1


def share_from_rank_zero(value):
    """`value` as rank 0 has it, in every process of a launched run (a collective: every rank calls it)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def process_device(device: str) -> str:
    """The device of this process: plain "cuda" is "cuda:<LOCAL_RANK>" in a launched process, so each
    process loads the model on its own GPU."""
    if launched() and device == "cuda":
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def check_processes(processes: int, device: str) -> None:
    """Checks that there is a GPU for each process on CUDA (on the CPU, any number of gloo processes).

    Raises:
        FineTuneError: when `processes` is larger than the number of visible GPUs, or one GPU is named.
    """
    if not device.startswith("cuda"):
        return
    if device != "cuda":
        raise FineTuneError(f"device={device!r} names one GPU; give device='cuda' with processes={processes}")
    import torch

    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise FineTuneError(f"processes={processes}, but {gpus} GPUs are visible; give at most {gpus} (one per GPU)")


def worker_arguments(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    output_dir: str,
    settings: FineTuneSettings,
    *,
    validation_labels_path: str = "",
    base_model_path: str = "",
) -> list[str]:
    """The arguments of `python -m embedpipe.fine_tune` for one run; `worker_parser` reads them.

    Args:
        corpus_path: Prepared corpus Parquet.
        queries_path: Prepared queries Parquet.
        train_labels_path: Prepared train labels Parquet.
        output_dir: The output folder.
        settings: The run's settings, passed as JSON.
        validation_labels_path: Validation labels Parquet, or "".
        base_model_path: `settings.base_model` resolved once by the launcher (a `gs://` model copied), or "".
    """
    arguments = ["--corpus", corpus_path, "--queries", queries_path, "--train-labels", train_labels_path]
    arguments += ["--output-dir", output_dir, "--settings", json.dumps(dataclasses.asdict(settings), sort_keys=True)]
    if validation_labels_path:
        arguments += ["--validation-labels", validation_labels_path]
    if base_model_path:
        arguments += ["--base-model-path", base_model_path]
    return arguments


def worker_parser() -> argparse.ArgumentParser:
    """The parser of `python -m embedpipe.fine_tune` (what `worker_arguments` writes)."""
    parser = argparse.ArgumentParser(
        prog="python -m embedpipe.fine_tune",
        description="Fine-tune on prepared Parquet tables; one process, or one rank under torchrun.",
    )
    parser.add_argument("--corpus", required=True, help="prepared corpus Parquet")
    parser.add_argument("--queries", required=True, help="prepared queries Parquet")
    parser.add_argument("--train-labels", required=True, help="prepared train labels Parquet")
    parser.add_argument("--validation-labels", default="", help="validation labels Parquet (optional)")
    parser.add_argument("--output-dir", required=True, help="the tuned model and checkpoints/ go here")
    parser.add_argument(
        "--settings",
        default="{}",
        type=_settings,
        help="FineTuneSettings fields as JSON, e.g. '{\"train_steps\": 10}'",
    )
    parser.add_argument("--base-model-path", default="", help="settings.base_model already resolved (launcher)")
    return parser


def _settings(text: str) -> FineTuneSettings:
    try:
        return FineTuneSettings(**json.loads(text))
    except FineTuneError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    except (ValueError, TypeError) as err:  # not JSON, not an object, an unknown field
        raise argparse.ArgumentTypeError(f"give a JSON object of FineTuneSettings fields: {err}") from None


def launch_command(processes: int, arguments: list[str]) -> list[str]:
    """The torchrun command line that starts `processes` processes of `python -m embedpipe.fine_tune arguments`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one machine: rendezvous on localhost, on a free port
        f"--nproc-per-node={processes}",
        "-m",
        PROCESS_MODULE,
        *arguments,
    ]


def run_processes(command: list[str]) -> None:
    """Runs a `launch_command` and waits; the processes log to this process's stdout and stderr.

    Raises:
        RuntimeError: when a process failed (torchrun then stops the others); its error is in the log.
    """
    log.info("fine_tune: launching %s", shlex.join(command[: command.index(PROCESS_MODULE) + 1]))
    returncode = subprocess.run(command, check=False).returncode
    if returncode:
        raise RuntimeError(
            f"fine_tune: a training process failed (torchrun exited with {returncode}); "
            "its error and traceback are in the log above"
        )
