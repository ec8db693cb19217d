"""What several `embedpipe` commands share: the BEIR data arguments and their paths, and NAME=VALUE pairs.

`run`, `prepare`, `evaluate` and `fine-tune` read the same input data (`add_data_arguments`, `data_paths`);
`submit` and `search` take repeatable NAME=VALUE flags (`key_values`).
Only the standard library is imported here, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from embedpipe.prompts import TASK_TYPES


def example_data() -> Path:
    """The packaged example data (`embedpipe.examples`): the default of --data, wherever embedpipe is installed."""
    from embedpipe.examples import scifact_mini

    return scifact_mini()


def add_task_type_argument(parser, default: str, what: str) -> None:
    """Adds --task-type: one of `embedpipe.prompts.TASK_TYPES` (any case), listed in the help.

    Args:
        parser: the subcommand's parser or argument group.
        default: the task type when the flag is not given.
        what: which prompt it selects, e.g. "the query prompt".
    """
    parser.add_argument(
        "--task-type",
        default=default,
        type=str.upper,  # as `check_task_type`: retrieval_query is RETRIEVAL_QUERY
        choices=TASK_TYPES,
        metavar="TASK_TYPE",
        help=f"selects {what}: %(choices)s (default: %(default)s)",
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the input data group (a BEIR folder, or its files one by one, and how to split them).

    Args:
        parser: the subcommand's parser.
    """
    group = parser.add_argument_group("input data (BEIR layout)")
    group.add_argument(
        "--data",
        help="folder with corpus.jsonl, queries.jsonl and qrels/{train,test,validation}.tsv "
        "(default: the packaged example data, a 400-document SciFact slice)",
    )
    group.add_argument("--corpus", help="corpus.jsonl path or gs:// URI (default: DATA/corpus.jsonl)")
    group.add_argument("--queries", help="queries.jsonl (default: DATA/queries.jsonl)")
    group.add_argument("--train-labels", help="train labels TSV (default: DATA/qrels/train.tsv)")
    group.add_argument("--test-labels", help="test labels TSV (default: DATA/qrels/test.tsv if it exists)")
    group.add_argument(
        "--validation-labels", help="validation labels TSV (default: DATA/qrels/validation.tsv if it exists)"
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of train queries split off as test when no test labels (default: %(default)s)",
    )
    group.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="share of train queries split off as validation (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=42, help="seed of the splits (default: %(default)s)")


def data_paths(args: argparse.Namespace) -> dict[str, str]:
    """The input files the data arguments name, as `prepare_data`'s keyword arguments.

    Args:
        args: parsed arguments of a command that called `add_data_arguments`.

    Returns:
        `corpus_path`, `queries_path`, `train_labels_path`, `test_labels_path` and `validation_labels_path`: an
        explicit flag wins, else the file in --data (or the example data); an optional split whose file does not
        exist is "".
    """
    data = Path(args.data) if args.data else example_data()

    def optional(explicit, default: Path) -> str:
        if explicit is not None:
            return explicit
        return str(default) if default.exists() else ""

    return {
        "corpus_path": args.corpus or str(data / "corpus.jsonl"),
        "queries_path": args.queries or str(data / "queries.jsonl"),
        "train_labels_path": args.train_labels or str(data / "qrels" / "train.tsv"),
        "test_labels_path": optional(args.test_labels, data / "qrels" / "test.tsv"),
        "validation_labels_path": optional(args.validation_labels, data / "qrels" / "validation.tsv"),
    }


def key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    """NAME=VALUE flags as a dict.

    Args:
        pairs: the flag's values (None when it was not given).
        what: the flag, for the error message, e.g. "--param".

    Returns:
        The values by name; a later pair wins over an earlier one with the same name.

    Raises:
        ValueError: a pair without "=" or without a name.
    """
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {pair!r} must look like name=value")
        values[key] = value
    return values
