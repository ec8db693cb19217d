"""The library commands on a BEIR folder, no KFP: `embedpipe prepare`, `embedpipe evaluate`, `embedpipe fine-tune`.

Each validates and prepares the data with `embedpipe.prepare` first, so a bad file fails before any model loads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from embedpipe.cli import exits
from embedpipe.cli.commands import add_command_parser
from embedpipe.cli.common import add_data_arguments, add_task_type_argument, data_paths
from embedpipe.cli.console import configure_logging


def cmd_prepare(args: argparse.Namespace) -> int:
    """`embedpipe prepare`: validates the data and writes the prepared Parquet files and report.md.

    Args:
        args: the parsed `prepare` arguments.

    Returns:
        The exit status, `exits.OK`.
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
    return exits.OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`embedpipe evaluate`: the retrieval metrics of a model (and a tuned one) on one split, with an HTML report.

    Args:
        args: the parsed `evaluate` arguments.

    Returns:
        The exit status: `exits.OK`, or `exits.GATE_FAILED` when --tuned-model does not reach the base model's
        NDCG@10 + --margin (the quality gate of `embedpipe run`; the report is written either way).
    """
    from embedpipe.evaluate import EvaluationOutputs, run_evaluation
    from embedpipe.metrics import metric_names
    from embedpipe.prepare import SPLITS, prepare_data

    configure_logging()
    if args.table:
        return _evaluate_table(args)
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
    if args.tuned_model and not comparison.tuned_is_better:  # the report is written: the gate only sets the status
        return exits.GATE_FAILED
    return exits.OK


def _evaluate_table(args: argparse.Namespace) -> int:
    """`embedpipe evaluate --table T`: each --search-mode of the table's search scored on the split's labels."""
    from embedpipe import storage
    from embedpipe.evaluate import compare, flat_metrics, per_query_table
    from embedpipe.metrics import metric_names
    from embedpipe.reports import ReportTexts, evaluation_report
    from embedpipe.vectorstore.embedded import embedded_database_uri
    from embedpipe.vectorstore.evaluation import evaluate_table, load_table_split
    from embedpipe.vectorstore.hybrid import SearchSettings

    modes = args.search_mode or ["vector"]
    settings = [
        SearchSettings(
            mode, rrf_k=args.rrf_k, vector_depth=args.depth, text_depth=args.depth, exact=args.exact
        ).check()
        for mode in modes
    ]
    labels_path = data_paths(args).get(f"{args.split}_labels_path", "")
    if not labels_path:
        raise ValueError(f"no {args.split} labels: name them with --{args.split}-labels")
    uri = args.db or embedded_database_uri(args.pgdata)
    queries, labels = load_table_split(uri, args.table, data_paths(args)["queries_path"], labels_path)
    evaluations = [
        evaluate_table(uri, args.table, queries, labels, s, model=args.model, task_type=args.task_type)
        for s in settings
    ]
    comparison = compare(evaluations[0], evaluations[1] if len(evaluations) > 1 else None)
    out = Path(args.output_dir)
    retrieval = (
        f"searched in table {args.table} ({', '.join(s.mode for s in settings)}{', exact' if args.exact else ''})"
    )
    storage.write_text_atomic(
        str(out / "report.html"),
        # The documents are in the table, not a file: the report shows the queries' texts and the documents' ids.
        evaluation_report(args.split, evaluations, comparison, retrieval, texts=ReportTexts(queries, None, labels)),
    )
    with storage.atomic_path(str(out / "per_query.parquet")) as tmp:
        per_query_table(evaluations).to_parquet(tmp, index=False)
    storage.write_text_atomic(
        str(out / "metrics.json"), json.dumps(flat_metrics(args.split, evaluations, comparison), indent=1)
    )
    print(f"\n{'metric':<14}" + "".join(f"{e.name:>10}" for e in evaluations))
    for name in metric_names():
        print(f"{name:<14}" + "".join(f"{e.metrics[name]:>10.4f}" for e in evaluations))
    print(f"\nreport: {out / 'report.html'}")
    return exits.OK


def fine_tune_settings(args: argparse.Namespace):
    """The `FineTuneSettings` of the parsed `fine-tune` arguments (checked: FineTuneError when wrong).

    Args:
        args: the parsed `fine-tune` arguments.

    Returns:
        The settings.
    """
    from embedpipe.fine_tune import FineTuneSettings

    return FineTuneSettings(
        base_model=args.model,
        task_type=args.task_type,
        batch_size=args.batch_size,
        train_steps=args.train_steps,
        iterations=args.iterations,
        learning_rate_multiplier=args.learning_rate_multiplier,
        base_learning_rate=args.base_learning_rate,
        output_dimensionality=args.output_dimensionality,
        seed=args.seed,
        max_seq_length=args.max_seq_length,
        mine_hard_negatives=args.hard_negatives,
        guided_loss=args.guided_loss,
        symmetric_loss=args.symmetric_loss,
        validation_share=args.validation_share,
        validation_steps=args.validation_steps,
        early_stopping_patience=args.early_stopping_patience,
        learning_rate_search=args.learning_rate_search,
        # Not given: FineTuneSettings' defaults (not imported here, to keep the CLI's start cheap).
        **{
            name: value
            for name in ("hard_negative_range_min", "hard_negative_margin")
            if (value := getattr(args, name)) is not None
        },
    )


def cmd_fine_tune(args: argparse.Namespace) -> int:
    """`embedpipe fine-tune`: prepares the data and fine-tunes the base model on its train labels.

    Args:
        args: the parsed `fine-tune` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from embedpipe import storage
    from embedpipe.fine_tune import fine_tune
    from embedpipe.prepare import SPLITS, prepare_data
    from embedpipe.reports import training_report

    configure_logging()
    settings = fine_tune_settings(args)  # checked before anything is written
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
    report = Path(args.output_dir) / "report.html"
    storage.write_text_atomic(str(report), training_report(result.metadata))
    print(json.dumps(result.metrics, indent=2))
    print(f"tuned model: {result.model_dir}\ntraining report: {report}")
    return exits.OK


def add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe prepare`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    prepare = add_command_parser(sub, "prepare")
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
    evaluate = add_command_parser(sub, "evaluate")
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
    add_task_type_argument(evaluate, "RETRIEVAL_QUERY", "the query prompt")
    evaluate.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help=f"the quality gate: --tuned-model passes when its NDCG@10 >= base + margin, else the exit status is {exits.GATE_FAILED} "
        "(default: %(default)s)",
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass when embedding (default: %(default)s)"
    )
    evaluate.add_argument(
        "--output-dir", default=".embedpipe/evaluate", help="where the report and tables go (default: %(default)s)"
    )
    table = evaluate.add_argument_group("a table's search (the corpus already in the table; --corpus unused)")
    table.add_argument("--table", help="score this pgvector table's search instead of the model's exact search")
    table.add_argument("--db", help="Postgres URI (default: the embedded database, started if needed)")
    table.add_argument("--pgdata", help="embedded database folder (default: $EMBEDPIPE_PGDATA or .embedpipe/pg)")
    table.add_argument(
        "--search-mode",
        action="append",
        choices=["vector", "text", "hybrid"],
        help="vector, text or hybrid (repeatable: each is scored; default: vector)",
    )
    table.add_argument("--rrf-k", type=int, default=20, help="hybrid: the fusion's constant (default: %(default)s)")
    table.add_argument("--depth", type=int, default=100, help="hybrid: rows per ranking (default: %(default)s)")
    table.add_argument("--exact", action="store_true", help="vector side without its index (exact, slower)")
    evaluate.set_defaults(func=cmd_evaluate)


def add_fine_tune_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe fine-tune`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    tune = add_command_parser(sub, "fine-tune")
    add_data_arguments(tune)
    tune.add_argument(
        "--model", default="default", help="base model: 'default' (packaged MiniLM), folder, gs:// or hub id"
    )
    add_task_type_argument(tune, "RETRIEVAL_QUERY", "the query prompt of the training pairs")
    tune.add_argument("--batch-size", type=int, default=32, help="pairs per step (default: %(default)s)")
    tune.add_argument("--train-steps", type=int, help="optimiser steps (default: --iterations, else 100)")
    tune.add_argument("--iterations", type=int, help="older name of --train-steps")
    tune.add_argument(
        "--learning-rate-multiplier",
        type=float,
        default=1.0,
        help="times the base rate (see --base-learning-rate; default: %(default)s)",
    )
    tune.add_argument(
        "--base-learning-rate",
        type=float,
        default=0.0,
        help="learning rate at multiplier 1 (default 0: 8e-5 with validation labels, 2e-5 without)",
    )
    tune.add_argument(
        "--output-dimensionality", type=int, default=0, help="embedding size of the tuned model (0 = the base's)"
    )
    tune.add_argument("--max-seq-length", type=int, default=0, help="tokens per text (0 = the model's own)")
    tune.add_argument("--hard-negatives", action="store_true", help="mine one hard negative per pair from the corpus")
    tune.add_argument(
        "--validation-share",
        type=float,
        default=0.1,
        help="share of the train queries held out for validation when there are no validation labels "
        "(0 = none; default: %(default)s)",
    )
    tune.add_argument(
        "--validation-steps",
        type=int,
        default=0,
        help="steps between validation NDCG@10 evaluations (0 = a fifth of the run); the best step is saved",
    )
    tune.add_argument(
        "--early-stopping-patience",
        type=int,
        default=3,
        help="stop after this many evaluations without improvement (0 = never; default: %(default)s)",
    )
    tune.add_argument(
        "--learning-rate-search",
        type=lambda text: tuple(float(factor) for factor in text.split(",") if factor.strip()),
        default=(),
        metavar="F1,F2,...",
        help="try these factors of the learning rate first (short runs scored on validation NDCG@10), "
        "then train with the best (default: no search)",
    )
    tune.add_argument(
        "--hard-negative-range-min",
        type=int,
        help="mining: ranks skipped at the top of the base model's ranking (default: FineTuneSettings')",
    )
    tune.add_argument(
        "--hard-negative-margin",
        type=float,
        help="mining: skip candidates scoring within this fraction of the positive's score (default: FineTuneSettings')",
    )
    tune.add_argument(
        "--guided-loss",
        action="store_true",
        help="filter in-batch false negatives with the base model as guide (GISTEmbedLoss; a second forward pass)",
    )
    tune.add_argument(
        "--symmetric-loss", action="store_true", help="rank queries to documents and documents to queries"
    )
    tune.add_argument(
        "--output-dir", default=".embedpipe/fine_tune", help="prepared data and model/ go here (default: %(default)s)"
    )
    tune.set_defaults(func=cmd_fine_tune)
