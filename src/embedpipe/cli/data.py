"""The library commands on a BEIR folder, no KFP: `embedpipe prepare`, `embedpipe evaluate`, `embedpipe fine-tune`.

Each validates and prepares the data with `embedpipe.prepare` first, so a bad file fails before any model loads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from embedpipe.cli.common import add_data_arguments, data_paths


def cmd_prepare(args: argparse.Namespace) -> int:
    """`embedpipe prepare`: validates the data and writes the prepared Parquet files and report.md.

    Args:
        args: the parsed `prepare` arguments.

    Returns:
        The exit status, 0.
    """
    from embedpipe.prepare import SPLITS, prepare_data

    paths = data_paths(args)
    prepared = prepare_data(
        **paths,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        vertex_limits=args.vertex_limits,
    )
    out = Path(args.output_dir)
    prepared.write(
        str(out / "corpus.parquet"),
        str(out / "queries.parquet"),
        {split: str(out / f"{split}_labels.parquet") for split in SPLITS},
        str(out / "report.md"),
    )
    print(prepared.report())
    print(f"wrote {out}/{{corpus,queries,train_labels,validation_labels,test_labels}}.parquet and report.md")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`embedpipe evaluate`: the retrieval metrics of a model (and a tuned one) on one split, with an HTML report.

    Args:
        args: the parsed `evaluate` arguments.

    Returns:
        The exit status, 0.
    """
    import logging

    from embedpipe.evaluate import EvaluationOutputs, run_evaluation
    from embedpipe.metrics import metric_names
    from embedpipe.prepare import SPLITS, prepare_data

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    paths = data_paths(args)
    fractions = {"test_fraction": args.test_fraction, "validation_fraction": args.validation_fraction}
    labels_split = args.split
    split_file = paths.get(f"{args.split}_labels_path", "")
    if (
        args.split != "train"
        and split_file
        and args.train_labels is None
        and not Path(paths["train_labels_path"]).exists()
    ):
        # Evaluating needs no train labels, and many BEIR folders ship only qrels/test.tsv: the split's own
        # file is validated in prepare_data's (required) train slot, with nothing split off.
        paths = {**paths, "train_labels_path": split_file, "test_labels_path": "", "validation_labels_path": ""}
        fractions = {"test_fraction": 0.0, "validation_fraction": 0.0}
        labels_split = "train"
    prepared = prepare_data(**paths, **fractions, seed=args.seed)
    out = Path(args.output_dir)
    data = out / "prepared"
    prepared.write(
        str(data / "corpus.parquet"),
        str(data / "queries.parquet"),
        {s: str(data / f"{s}_labels.parquet") for s in SPLITS},
    )
    evaluations, comparison, _ = run_evaluation(
        str(data / "corpus.parquet"),
        str(data / "queries.parquet"),
        str(data / f"{labels_split}_labels.parquet"),
        base_model=args.model,
        tuned_model=args.tuned_model or "",
        task_type=args.task_type,
        split=args.split,
        margin=args.margin,
        batch_size=args.batch_size,
        outputs=EvaluationOutputs(
            str(out / "per_query.parquet"), str(out / "runs"), str(out / "report.html"), str(out / "corpus_embeddings")
        ),
    )
    print(f"\n{'metric':<14}" + "".join(f"{e.name:>10}" for e in evaluations))
    for name in metric_names():
        print(f"{name:<14}" + "".join(f"{e.metrics[name]:>10.4f}" for e in evaluations))
    print(f"\n{comparison.sentence()}\nreport: {out / 'report.html'}")
    return 0


def cmd_fine_tune(args: argparse.Namespace) -> int:
    """`embedpipe fine-tune`: prepares the data and fine-tunes the base model on its train labels.

    Args:
        args: the parsed `fine-tune` arguments.

    Returns:
        The exit status, 0.
    """
    import json
    import logging

    from embedpipe.fine_tune import FineTuneSettings, fine_tune
    from embedpipe.prepare import SPLITS, prepare_data

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = FineTuneSettings(  # checked before anything is written
        base_model=args.model,
        task_type=args.task_type,
        batch_size=args.batch_size,
        train_steps=args.train_steps,
        iterations=args.iterations,
        learning_rate_multiplier=args.learning_rate_multiplier,
        output_dimensionality=args.output_dimensionality,
        seed=args.seed,
        max_seq_length=args.max_seq_length,
        mine_hard_negatives=args.hard_negatives,
    )
    prepared = prepare_data(
        **data_paths(args),
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
    data = Path(args.output_dir) / "prepared"
    prepared.write(
        str(data / "corpus.parquet"),
        str(data / "queries.parquet"),
        {s: str(data / f"{s}_labels.parquet") for s in SPLITS},
    )
    result = fine_tune(
        str(data / "corpus.parquet"),
        str(data / "queries.parquet"),
        str(data / "train_labels.parquet"),
        str(Path(args.output_dir) / "model"),
        settings,
        validation_labels_path=str(data / "validation_labels.parquet"),
    )
    print(json.dumps(result.metrics, indent=2))
    print(f"tuned model: {result.model_dir}")
    return 0


def add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe prepare`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    prepare = sub.add_parser("prepare", help="validate and prepare BEIR-style data (library only, no KFP)")
    add_data_arguments(prepare)
    prepare.add_argument("--output-dir", required=True, help="folder for the Parquet files and report.md")
    prepare.add_argument(
        "--vertex-limits",
        choices=("warn", "error"),
        default="warn",
        help="a dataset outside Vertex AI's documented tuning size requirements: warn and go on (default), or "
        "fail, to check that Vertex would accept it too",
    )
    prepare.set_defaults(func=cmd_prepare)


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe evaluate`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    evaluate = sub.add_parser("evaluate", help="NDCG@10 etc. of a model (and a tuned one) on a BEIR folder")
    add_data_arguments(evaluate)
    evaluate.add_argument(
        "--model", default="default", help="base model: 'default' (packaged MiniLM), folder or hub id"
    )
    evaluate.add_argument("--tuned-model", help="a tuned model folder to compare with the base model")
    evaluate.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "train"],
        help="labels to evaluate on (default: %(default)s)",
    )
    evaluate.add_argument("--task-type", default="RETRIEVAL_QUERY", help="selects the prompts (default: %(default)s)")
    evaluate.add_argument("--margin", type=float, default=0.0, help="tuned passes when NDCG@10 >= base + margin")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument(
        "--output-dir", default=".embedpipe/evaluate", help="where the report and tables go (default: %(default)s)"
    )
    evaluate.set_defaults(func=cmd_evaluate)


def add_fine_tune_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe fine-tune`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    tune = sub.add_parser(
        "fine-tune", help="fine-tune a model on the train labels of a BEIR folder (library only, no KFP)"
    )
    add_data_arguments(tune)
    tune.add_argument(
        "--model", default="default", help="base model: 'default' (packaged MiniLM), folder, gs:// or hub id"
    )
    tune.add_argument("--task-type", default="RETRIEVAL_QUERY", help="selects the prompts (default: %(default)s)")
    tune.add_argument("--batch-size", type=int, default=32, help="pairs per step (default: %(default)s)")
    tune.add_argument("--train-steps", type=int, help="optimiser steps (default: --iterations, else 100)")
    tune.add_argument("--iterations", type=int, help="older name of --train-steps")
    tune.add_argument(
        "--learning-rate-multiplier", type=float, default=1.0, help="times the base rate 2e-5 (default: %(default)s)"
    )
    tune.add_argument(
        "--output-dimensionality", type=int, default=0, help="embedding size of the tuned model (0 = the base's)"
    )
    tune.add_argument("--max-seq-length", type=int, default=0, help="tokens per text (0 = the model's own)")
    tune.add_argument("--hard-negatives", action="store_true", help="mine one hard negative per pair from the corpus")
    tune.add_argument(
        "--output-dir", default=".embedpipe/fine_tune", help="prepared data and model/ go here (default: %(default)s)"
    )
    tune.set_defaults(func=cmd_fine_tune)
