"""`python -m embedpipe.fine_tune`: one fine-tuning run on prepared Parquet tables, settings as JSON.

What torchrun starts in each process of a distributed run (`embedpipe.fine_tune.distributed`); by hand it
is a run of its own (launching torchrun itself when the settings ask for more than one process):

    python -m embedpipe.fine_tune --corpus corpus.parquet --queries queries.parquet \\
        --train-labels train_labels.parquet --output-dir tuned/ --settings '{"train_steps": 100}'

Run again with the same `--output-dir`, it resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from embedpipe.fine_tune import distributed
from embedpipe.fine_tune.run import fine_tune, run_training
from embedpipe.fine_tune.settings import FineTuneError
from embedpipe.models import ModelLoadError


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the arguments (`distributed.worker_parser`) and runs.

    Returns:
        The exit status: 0, or 1 with the message when an input is wrong (found before training).
    """
    args = distributed.worker_parser().parse_args(argv)
    where = f" rank {distributed.rank()}/{distributed.world_size()}" if distributed.launched() else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s{where} %(message)s")
    paths = (args.corpus, args.queries, args.train_labels, args.output_dir)
    if distributed.launched():
        run_training(
            *paths,
            args.settings,
            validation_labels_path=args.validation_labels,
            base_model_path=args.base_model_path,
        )
        _leave_process_group()
        return 0
    try:
        fine_tune(*paths, args.settings, validation_labels_path=args.validation_labels)
    except (FineTuneError, ModelLoadError) as err:
        print(f"python -m embedpipe.fine_tune: {err}", file=sys.stderr)
        return 1
    return 0


def _leave_process_group() -> None:
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())  # torchrun's failure summary then shows the traceback of the process that failed
