"""The `embedpipe` command.

embedpipe run                 # the whole pipeline locally (kfp.local) on the example data
embedpipe prepare --data DIR  # data preparation alone, straight from the library
embedpipe fine-tune --data DIR --output-dir OUT  # fine-tune the base model on the train labels
embedpipe embed --input corpus.jsonl --output vectors/  # the Beam embedding job alone
embedpipe search "some text"  # top-k from the vector database (default: the embedded one)
embedpipe db                  # start the embedded PostgreSQL + pgvector, print how to connect
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def example_data() -> Path:
    """The packaged example data (`embedpipe.examples`): the default of --data, wherever embedpipe is installed."""
    from embedpipe.examples import scifact_mini

    return scifact_mini()


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
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


def _data_paths(args) -> dict[str, str]:
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


def cmd_prepare(args) -> int:
    from embedpipe.prepare import SPLITS, prepare_data

    paths = _data_paths(args)
    prepared = prepare_data(
        **paths, test_fraction=args.test_fraction, validation_fraction=args.validation_fraction, seed=args.seed
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


def cmd_run(args) -> int:
    from embedpipe.local import CLOUD_ONLY_STEPS, LOCAL_OVERRIDES, LocalRunFailed, declared_parameters, run_locally
    from embedpipe.pipelines import tune_and_index

    paths = _data_paths(args)
    if args.runner == "docker":  # before anything starts: a daemon that answers and the images
        from embedpipe.docker_runner import DockerUnavailable, check_docker

        try:
            check_docker().close()
        except DockerUnavailable as err:
            print(f"embedpipe run --runner docker: {err}", file=sys.stderr)
            return 3
    database_uri = args.database_uri
    if not database_uri:
        from embedpipe.vectorstore.embedded import embedded_database_uri

        database_uri = embedded_database_uri()
    wanted = {
        "corpus_path": paths["corpus_path"],
        "queries_path": paths["queries_path"],
        "train_label_path": paths["train_labels_path"],
        "test_label_path": paths["test_labels_path"],
        "validation_label_path": paths["validation_labels_path"],
        "test_fraction": args.test_fraction,
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        **LOCAL_OVERRIDES,
        "base_model_version_id": args.model,
        "task_type": args.task_type,
        "train_steps": args.train_steps,
        "batch_size": args.batch_size,
        "learning_rate_multiplier": args.learning_rate_multiplier,
        "quality_margin": args.margin,
        "index_with_base_model": args.index_with_base_model,
        "database_uri": database_uri,
        "vector_table": args.table,
    }
    declared = declared_parameters(tune_and_index)
    arguments = {name: value for name, value in wanted.items() if name in declared}
    runner, runner_name = None, "SubprocessRunner"
    if args.runner == "docker":
        runner, runner_name = _docker_runner(arguments, database_uri)
    print(f"embedpipe run: pipeline {tune_and_index.name!r} with kfp.local ({runner_name}) under {args.output_dir}")
    print("cloud-only steps skipped locally: " + "; ".join(CLOUD_ONLY_STEPS))
    try:
        run = run_locally(tune_and_index, arguments, pipeline_root=args.output_dir, runner=runner)
    except LocalRunFailed as err:
        if err.run is not None:
            _print_run_summary(err.run, args, database_uri)
        gate_failed = not args.index_with_base_model and err.run is not None and _gate_failed(err.run)
        if gate_failed:
            print(
                "\nembedpipe run stopped at the quality gate: the tuned model did not beat the base model by "
                f"--margin {args.margin}; the reports above are kept. Train longer (--train-steps), change "
                "--learning-rate-multiplier, lower --margin, or pass --index-with-base-model.",
                file=sys.stderr,
            )
        else:
            print(f"\nembedpipe run failed: {err}\nThe failing task's log above says why.", file=sys.stderr)
        return 1
    _print_run_summary(run, args, database_uri)
    return 0


def _docker_runner(arguments: dict, database_uri: str):
    """The DockerRunner of our images, with the mounts, environment and user these arguments need."""
    from embedpipe.docker_runner import docker_runner, plan_containers

    plan = plan_containers(arguments, database_uri=database_uri)
    return docker_runner(plan), f"DockerRunner, each task in its image; mounted: {', '.join(plan.mounts) or 'nothing'}"


def _gate_failed(run) -> bool:
    from embedpipe.local import comparison_task

    compared = comparison_task(run)
    return compared is not None and not run.outputs[compared]["tuned_is_better"]["metadata"]["value"]


def _print_run_summary(run, args, database_uri: str) -> None:
    from embedpipe.local import comparison_task, example_query, indexed_model, stage_times

    times = stage_times(run, run.started_at)
    print(f"\n== embedpipe run: {sum(t for _, t in times):.0f} s; run folder: {run.run_dir}")
    print("\nStages: " + ", ".join(f"{task} {seconds:.0f} s" for task, seconds in times))
    prepared = run.outputs.get("prepare-data")
    if prepared:
        counts = prepared["metrics"]["metadata"]
        print("Data: " + ", ".join(f"{k} {int(v):,}" for k, v in counts.items()))
        print(f"Data report: {prepared['report']['uri']}")
    compared = comparison_task(run)
    if compared:
        outputs = run.outputs[compared]
        base = outputs["base_ndcg_at_10"]["metadata"]["value"]
        tuned = outputs["tuned_ndcg_at_10"]["metadata"]["value"]
        gate = "passed" if outputs["tuned_is_better"]["metadata"]["value"] else "did not pass"
        print(
            f"\nNDCG@10 on the test labels: base {base:.4f} -> tuned {tuned:.4f} ({tuned - base:+.4f}); quality gate {gate}"
        )
        print(f"Evaluation report: {outputs['report']['uri']}")
    uploaded = [task for task in run.outputs if task.startswith("upload-vectors")]
    for task in uploaded:
        rows = run.outputs[task]["metrics"]["metadata"].get("rows")
        print(f"\nVectors: {int(rows or 0):,} rows in table {args.table!r} of {database_uri}")
        print(f"  psql '{database_uri}'")
        query = example_query(run).replace('"', "'")
        model = indexed_model(run) or args.model
        print(f"  embedded with {model}; search it with the same model:")
        print(
            f"  embedpipe search \"{query}\" --db '{database_uri}' --table {args.table} "
            f"--model '{model}' --task-type {args.task_type}"
        )


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {pair!r} must look like name=value")
        values[key] = value
    return values


def cmd_submit(args) -> int:
    from embedpipe.submit import Submission, coerce_parameters, submit

    caching = {"on": True, "off": False, "default": None}[args.caching]
    submission = Submission(
        template_path=args.template,
        project=args.project,
        location=args.location,
        pipeline_root=args.pipeline_root,
        parameter_values=coerce_parameters(args.template, _key_values(args.param, "--param")),
        service_account=args.service_account or "",
        labels=_key_values(args.label, "--label"),
        enable_caching=caching,
        display_name=args.display_name or "",
        network=args.network or "",
    )
    job = submit(submission)
    print(f"submitted {job.resource_name}\n{getattr(job, '_dashboard_uri', lambda: '')()}")
    return 0


def cmd_embed(args) -> int:
    from dataclasses import replace

    from embedpipe.embed.dataflow import default_project
    from embedpipe.embed.job import config_from_args, run_job
    from embedpipe.embed.settings import DataflowSettings, from_mapping

    dataflow = from_mapping(DataflowSettings, args)
    beam_args = []
    if args.runner == "DataflowRunner":
        dataflow = replace(dataflow, project=dataflow.project or default_project())
        beam_args = dataflow.beam_args()
    config = config_from_args(args, dataflow if args.runner == "DataflowRunner" else None)
    print(f"embedpipe embed: {config.input_pattern} ({config.input_format}) -> {config.output} on {args.runner}")
    result = run_job(config, beam_args)
    print(result.summary())
    return 0


def cmd_stream(args) -> int:
    import logging

    from embedpipe.embed.streaming import run_stream
    from embedpipe.embed.streaming.cli import config_and_args_from_args

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config, beam_args = config_and_args_from_args(args)
    result = run_stream(config, beam_args)
    print(result.summary())
    return 0


def cmd_evaluate(args) -> int:
    import logging

    from embedpipe.evaluate import EvaluationOutputs, run_evaluation
    from embedpipe.metrics import metric_names
    from embedpipe.prepare import SPLITS, prepare_data

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    paths = _data_paths(args)
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


def cmd_fine_tune(args) -> int:
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
        **_data_paths(args),
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


def cmd_search(args) -> int:
    from embedpipe.vectorstore.embedded import embedded_database_uri
    from embedpipe.vectorstore.search import search_text

    uri = args.db or embedded_database_uri(args.pgdata)
    where = _key_values(args.where, "--where")
    hits = search_text(
        uri,
        args.query,
        table=args.table,
        model=args.model,
        task_type=args.task_type,
        k=args.k,
        where=where,
        metric=args.metric,
    )
    if args.json:
        import json

        print(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        content = " ".join((hit.content or "").split())
        print(f"{rank:>2}. {hit.score:.4f}  {hit.id}  {content[:100]}{'...' if len(content) > 100 else ''}")
    return 0


def cmd_db(args) -> int:
    from embedpipe.vectorstore.embedded import embedded_database_uri, stop_embedded_database

    if args.stop:
        print("stopped" if stop_embedded_database(args.pgdata) else "not running")
        return 0
    embedded_database_uri(args.pgdata, announce=True)
    return 0


def cmd_serve(args) -> int:
    from embedpipe.serving import serve

    serve(args.model, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from embedpipe import __version__

    parser = argparse.ArgumentParser(
        prog="embedpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"embedpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline locally with kfp.local on embedded defaults")
    _add_data_arguments(run)
    run.add_argument(
        "--output-dir", default=".embedpipe/runs", help="pipeline root for local runs (default: %(default)s)"
    )
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: every task in this Python (default); docker: every task in the image the compiled YAML "
        "names, built by `make images-local` (needs a Docker daemon)",
    )
    tuning = run.add_argument_group("tuning (Vertex's parameter names)")
    tuning.add_argument(
        "--model",
        default="default",
        help="base model: 'default' = the packaged all-MiniLM-L6-v2 (default), a folder or hub id",
    )
    tuning.add_argument("--task-type", default="RETRIEVAL_QUERY", help="selects the prompts (default: %(default)s)")
    tuning.add_argument(
        "--train-steps", "--iterations", type=int, default=30, help="training steps (default: %(default)s)"
    )
    tuning.add_argument("--batch-size", type=int, default=16, help="training batch size (default: %(default)s)")
    tuning.add_argument(
        "--learning-rate-multiplier", type=float, default=1.0, help="times the base rate 2e-5 (default: %(default)s)"
    )
    tuning.add_argument(
        "--margin", type=float, default=0.0, help="tuned NDCG@10 must be >= base + margin (default: %(default)s)"
    )
    tuning.add_argument(
        "--index-with-base-model", action="store_true", help="index with the base model when the gate fails"
    )
    database = run.add_argument_group("vector database")
    database.add_argument(
        "--database-uri", default="", help="Postgres URI (default: the embedded PostgreSQL + pgvector)"
    )
    database.add_argument("--table", default="embeddings", help="table of vectors (default: %(default)s)")
    run.set_defaults(func=cmd_run)

    prepare = sub.add_parser("prepare", help="validate and prepare BEIR-style data (library only, no KFP)")
    _add_data_arguments(prepare)
    prepare.add_argument("--output-dir", required=True, help="folder for the Parquet files and report.md")
    prepare.set_defaults(func=cmd_prepare)

    submit = sub.add_parser("submit", help="submit compiled pipeline YAML to Vertex AI Pipelines")
    submit.add_argument("template", help="compiled pipeline YAML, e.g. build/pipelines/tune_and_index.yaml")
    submit.add_argument("--project", required=True, help="Google Cloud project id")
    submit.add_argument("--location", default="us-central1", help="Vertex AI region (default: %(default)s)")
    submit.add_argument("--pipeline-root", required=True, help="gs:// folder for the run's artifacts")
    submit.add_argument("--service-account", help="service account the run uses")
    submit.add_argument("--network", help="VPC network, projects/<number>/global/networks/<name>")
    submit.add_argument("--param", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    submit.add_argument("--label", action="append", metavar="KEY=VALUE", help="Vertex label (repeatable)")
    submit.add_argument(
        "--caching",
        choices=["on", "off", "default"],
        default="default",
        help="task caching (default: the pipeline's own)",
    )
    submit.add_argument("--display-name", help="run display name (default: from the file name)")
    submit.set_defaults(func=cmd_submit)

    from embedpipe.embed.job import add_job_arguments
    from embedpipe.embed.settings import DataflowSettings, add_arguments

    embed = sub.add_parser(
        "embed", help="embed a corpus into Parquet vector shards with Beam (local runner or Dataflow)"
    )
    add_job_arguments(embed)
    cloud = embed.add_argument_group("Dataflow (with --runner DataflowRunner)")
    cloud.add_argument(
        "--runner", default="DirectRunner", choices=["DirectRunner", "DataflowRunner"], help="(default: %(default)s)"
    )
    add_arguments(cloud, DataflowSettings)
    embed.set_defaults(func=cmd_embed)

    from embedpipe.embed.streaming.cli import add_stream_arguments

    stream = sub.add_parser(
        "stream", help="embed document changes from Pub/Sub into pgvector as they arrive (local runner or Dataflow)"
    )
    add_stream_arguments(stream)
    stream.set_defaults(func=cmd_stream)

    evaluate = sub.add_parser("evaluate", help="NDCG@10 etc. of a model (and a tuned one) on a BEIR folder")
    _add_data_arguments(evaluate)
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

    tune = sub.add_parser(
        "fine-tune", help="fine-tune a model on the train labels of a BEIR folder (library only, no KFP)"
    )
    _add_data_arguments(tune)
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

    serve = sub.add_parser("serve", help="serve a model with a textembedding-gecko compatible :predict endpoint")
    serve.add_argument(
        "--model",
        help="model folder, gs:// folder, hub id or 'default' (default: $AIP_STORAGE_URI or the packaged MiniLM)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 in a container)"
    )
    serve.add_argument("--port", type=int, help="port (default: $AIP_HTTP_PORT or 8080)")
    serve.set_defaults(func=cmd_serve)

    search = sub.add_parser("search", help="top-k documents for a text from the vector database")
    search.add_argument("query", help="the text to search for")
    search.add_argument("--db", help="Postgres URI (default: the embedded database, started if needed)")
    search.add_argument("--pgdata", help="embedded database folder (default: $EMBEDPIPE_PGDATA or .embedpipe/pg)")
    search.add_argument("--table", default="embeddings", help="(default: %(default)s)")
    search.add_argument(
        "--model", default="default", help="the model the corpus was embedded with (default: %(default)s)"
    )
    search.add_argument(
        "--task-type", default="RETRIEVAL_QUERY", help="selects the query prompt (default: %(default)s)"
    )
    search.add_argument("-k", type=int, default=5, help="how many results (default: %(default)s)")
    search.add_argument(
        "--where", action="append", metavar="KEY=VALUE", help="only rows with metadata KEY equal to VALUE (repeatable)"
    )
    search.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"], help="(default: %(default)s)")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(func=cmd_search)

    db = sub.add_parser("db", help="start the embedded PostgreSQL + pgvector and print its psql URI")
    db.add_argument("--pgdata", help="its data folder (default: $EMBEDPIPE_PGDATA or .embedpipe/pg)")
    db.add_argument("--stop", action="store_true", help="stop it instead")
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    from embedpipe.validation import DataValidationError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataValidationError, FileNotFoundError, ValueError) as err:  # ModelLoadError is a ValueError
        print(f"embedpipe {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
