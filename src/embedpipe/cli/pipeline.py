"""The whole pipeline: `embedpipe run` (locally, with kfp.local) and `embedpipe submit` (to Vertex AI Pipelines).

`run` runs `tune_and_index` task by task in this Python (SubprocessRunner) or each task in its image
(DockerRunner), then prints what the run made: stage times, data counts, the quality gate and how to search
the vectors. `submit` sends compiled pipeline YAML to Vertex.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embedpipe.cli import exits
from embedpipe.cli.commands import add_command_parser
from embedpipe.cli.common import add_data_arguments, add_task_type_argument, data_paths, key_values
from embedpipe.write_modes import WRITE_MODES


def cmd_run(args: argparse.Namespace) -> int:
    """`embedpipe run`: the `tune_and_index` pipeline with kfp.local, then a summary of what it made.

    The console gets one line per stage as it starts and ends, the running task's progress lines and, for a
    failing task, its last lines; everything (kfp.local's dumps, the tasks' full logs) goes to a log file in
    the run folder, and to the console too with --verbose.

    Args:
        args: the parsed `run` arguments.

    Returns:
        The exit status: OK; RUN_FAILED when a task failed; GATE_FAILED when the tuned model did not pass the
        quality gate; MISSING when --runner docker finds no Docker daemon.
    """
    from embedpipe.cli import exits
    from embedpipe.vectorstore.conninfo import check_no_password

    # Before anything starts (and before it becomes a pipeline parameter, which kfp.local writes to the run's
    # files and logs): a password in clear is refused, and the message shows the URI redacted.
    check_no_password(args.database_uri, what="--database-uri")
    from embedpipe.local import CLOUD_ONLY_STEPS, LOCAL_OVERRIDES, LocalRunFailed, declared_parameters, run_locally
    from embedpipe.local_console import display_path, watched_run
    from embedpipe.pipelines import tune_and_index

    paths = data_paths(args)
    if args.runner == "docker":  # before anything starts: a daemon that answers and the images
        from embedpipe.docker_runner import DockerUnavailable, check_docker

        try:
            check_docker().close()
        except DockerUnavailable as err:
            print(f"embedpipe run --runner docker: {err}", file=sys.stderr)
            return exits.MISSING
    if args.verbose:  # the tasks inherit it: their libraries keep their INFO lines
        from embedpipe.progress import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    else:  # the tasks inherit it: no tqdm bars of model loads and saves in the log (huggingface_hub's switch)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    print(
        f"embedpipe run: pipeline {tune_and_index.name!r} with kfp.local under {display_path(args.output_dir)}"
        + ("" if args.verbose else "; --verbose shows the tasks' full logs")
    )
    print("cloud-only steps skipped locally: " + "; ".join(CLOUD_ONLY_STEPS))
    sys.stdout.flush()
    # From here on, what libraries print (the embedded database starting, kfp.local, the tasks) goes to the log.
    with watched_run(args.output_dir, verbose=args.verbose) as watcher:
        database_uri = args.database_uri
        if not database_uri:
            from embedpipe.vectorstore.embedded import embedded_database_uri

            database_uri = embedded_database_uri()
        arguments = _pipeline_arguments(
            args, paths, database_uri, LOCAL_OVERRIDES, declared_parameters(tune_and_index)
        )
        runner = None
        if args.runner == "docker":
            runner, runner_name = _docker_runner(arguments, database_uri)
            watcher.say(f"runner: {runner_name}")
        try:
            run, failure = run_locally(tune_and_index, arguments, pipeline_root=args.output_dir, runner=runner), None
        except LocalRunFailed as err:
            run, failure = err.run, err
    if failure is None:
        _print_run_summary(run, args, database_uri, watcher)
        return exits.OK
    if run is not None:
        _print_run_summary(run, args, database_uri, watcher)
    if not args.index_with_base_model and run is not None and _gate_failed(run):
        print(
            "\nembedpipe run stopped at the quality gate: the tuned model did not beat the base model by "
            f"--margin {args.margin}; the reports above are kept. Train longer (--train-steps), change "
            "--learning-rate-multiplier, lower --margin, or pass --index-with-base-model.",
            file=sys.stderr,
        )
        return exits.GATE_FAILED
    failed = f" (task {watcher.failed})" if watcher.failed else ""
    print(
        f"\nembedpipe run failed{failed}: {_plain(str(failure))}\nIts last lines are above; the full log: "
        f"{display_path(watcher.log_path)}",
        file=sys.stderr,
    )
    return exits.RUN_FAILED


def _pipeline_arguments(args, paths: dict, database_uri: str, overrides: dict, declared: set[str]) -> dict:
    """`tune_and_index`'s arguments from the `run` flags: those the pipeline declares."""
    wanted = {
        "corpus_path": paths["corpus_path"],
        "queries_path": paths["queries_path"],
        "train_label_path": paths["train_labels_path"],
        "test_label_path": paths["test_labels_path"],
        "validation_label_path": paths["validation_labels_path"],
        "test_fraction": args.test_fraction,
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        **overrides,
        "base_model_version_id": args.model,
        "task_type": args.task_type,
        "train_steps": args.train_steps,
        "batch_size": args.batch_size,
        "learning_rate_multiplier": args.learning_rate_multiplier,
        "quality_margin": args.margin,
        "index_with_base_model": args.index_with_base_model,
        "database_uri": database_uri,
        "vector_table": args.table,
        "write_mode": args.write_mode,
    }
    return {name: value for name, value in wanted.items() if name in declared}


def _plain(text: str) -> str:
    """kfp.local's message without its colour codes."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _docker_runner(arguments: dict, database_uri: str):
    """The DockerRunner of our images, with the mounts, environment and user these arguments need."""
    from embedpipe.docker_runner import docker_runner, plan_containers

    plan = plan_containers(arguments, database_uri=database_uri)
    return docker_runner(plan), f"DockerRunner, each task in its image; mounted: {', '.join(plan.mounts) or 'nothing'}"


def _gate_failed(run) -> bool:
    from embedpipe.local import comparison_task

    compared = comparison_task(run)
    return compared is not None and not run.outputs[compared]["tuned_is_better"]["metadata"]["value"]


def _print_run_summary(run, args, database_uri: str, watcher) -> None:
    """What the run made, in short lines; paths relative to the current folder where they are under it."""
    from embedpipe.local import comparison_task, example_query, indexed_model, stage_times
    from embedpipe.local_console import display_path
    from embedpipe.vectorstore.conninfo import redact_connection_string

    embedded = not args.database_uri
    database_uri = redact_connection_string(database_uri)
    # The times the console saw each stage take; from the files' times when it saw none (a run it did not watch).
    times = [(task, seconds) for task, seconds, _ in watcher.stages] or stage_times(run, run.started_at)
    print(f"\n== embedpipe run: {sum(t for _, t in times):.0f} s; run folder: {display_path(run.run_dir)}")
    if watcher.log_path is not None:
        print(f"Full log: {display_path(watcher.log_path)}")
    print("Stages: " + ", ".join(f"{task} {seconds:.0f} s" for task, seconds in times))
    prepared = run.outputs.get("prepare-data")
    if prepared:
        print("Data: " + _data_counts(prepared["metrics"]["metadata"]))
        print(f"Data report: {display_path(prepared['report']['uri'])}")
    trained = [task for task in run.outputs if task.startswith("fine-tune") and "report" in run.outputs[task]]
    for task in trained:
        print(f"Training report: {display_path(run.outputs[task]['report']['uri'])}")
    compared = comparison_task(run)
    if compared:
        outputs = run.outputs[compared]
        base = outputs["base_ndcg_at_10"]["metadata"]["value"]
        tuned = outputs["tuned_ndcg_at_10"]["metadata"]["value"]
        gate = "passed" if outputs["tuned_is_better"]["metadata"]["value"] else "did not pass"
        print(
            f"\nNDCG@10 on the test labels: base {base:.4f} -> tuned {tuned:.4f} ({tuned - base:+.4f}); quality gate {gate}"
        )
        print(f"Evaluation report: {display_path(outputs['report']['uri'])}")
    uploaded = [task for task in run.outputs if task.startswith("upload-vectors")]
    where = "the embedded PostgreSQL" if embedded else database_uri
    for task in uploaded:
        counts = run.outputs[task]["metrics"]["metadata"]
        print(f"\nVectors: {int(counts.get('rows') or 0):,} rows in table {args.table!r} of {where}")
        changes = [f"{name} {int(counts[name]):,}" for name in ("inserted", "updated", "deleted") if name in counts]
        if changes:
            print(f"  {args.write_mode}: " + ", ".join(changes))
        if not embedded:
            print(f"  psql '{database_uri}'")
        query = example_query(run).replace('"', "'")
        model = indexed_model(run) or args.model
        shown_model = display_path(model) if Path(model).is_dir() else model
        # Searched with the model the vectors were embedded with; the embedded database is found by itself.
        db = "" if embedded else f" --db '{database_uri}'"
        print(
            f'  embedpipe search "{query}"{db} --table {args.table} '
            f"--model '{shown_model}' --task-type {args.task_type}"
        )
    if embedded:
        _print_embedded_database_notice()


def _data_counts(counts: dict) -> str:
    """prepare-data's counts in one short line: '400 documents, 60 queries; labels: 90 train, 30 test; 3 warnings'."""

    def count(name: str) -> int:
        return int(counts.get(name) or 0)

    labels = [f"{count(f'{split}_labels'):,} {split}" for split in ("train", "validation", "test")]
    text = f"{count('corpus_documents'):,} documents, {count('queries'):,} queries; labels: " + ", ".join(labels)
    return text + (f"; {count('warnings'):,} warnings (see the data report)" if count("warnings") else "")


def _print_embedded_database_notice() -> None:
    """Says that the embedded PostgreSQL this run started keeps running, where its data is, how to stop it."""
    from embedpipe.local_console import display_path
    from embedpipe.vectorstore.embedded import default_pgdata

    pgdata = display_path(default_pgdata())
    option = "" if not os.environ.get("EMBEDPIPE_PGDATA") else f" --pgdata {pgdata}"
    print(f"The embedded PostgreSQL is still running (data: {pgdata}); stop it with: embedpipe db --stop{option}")


def cmd_submit(args: argparse.Namespace) -> int:
    """`embedpipe submit`: sends compiled pipeline YAML to Vertex AI Pipelines, its parameters typed from the YAML.

    Args:
        args: the parsed `submit` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from embedpipe.submit import Submission, read_request, submit

    caching = {"on": True, "off": False, "default": None}[args.caching]
    request = read_request(args.request) if args.request else {}
    # Typed from the compiled YAML, and checked (a Vertex model id included), by `submit` before any call.
    parameters = {**request.get("parameter_values", {}), **key_values(args.param, "--param")}
    submission = Submission(
        template_path=args.template,
        project=args.project,
        location=args.location,
        pipeline_root=args.pipeline_root or request.get("pipeline_root", ""),
        parameter_values=parameters,
        service_account=args.service_account or "",
        labels=key_values(args.label, "--label"),
        enable_caching=caching,
        display_name=args.display_name or request.get("display_name", ""),
        network=args.network or "",
        encryption_spec_key_name=args.encryption_spec_key_name or "",
    )
    job = submit(submission)
    print(f"submitted {job.resource_name}\n{getattr(job, '_dashboard_uri', lambda: '')()}")
    return exits.OK


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe run`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    run = add_command_parser(sub, "run")
    add_data_arguments(run)
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
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show everything on the console: kfp.local's task inputs and outputs, the tasks' full logs "
        "(by default: one line per stage and its progress; the rest goes to the log file in the run folder)",
    )
    tuning = run.add_argument_group("tuning (Vertex's parameter names)")
    tuning.add_argument(
        "--model",
        default="default",
        help="base model: 'default' = the packaged all-MiniLM-L6-v2 (default), a folder or hub id",
    )
    add_task_type_argument(tuning, "RETRIEVAL_QUERY", "the query prompt (training, evaluation, search)")
    tuning.add_argument(
        "--train-steps", "--iterations", type=int, default=30, help="training steps (default: %(default)s)"
    )
    tuning.add_argument("--batch-size", type=int, default=16, help="training batch size (default: %(default)s)")
    tuning.add_argument(
        "--learning-rate-multiplier",
        type=float,
        default=1.0,
        help="times the base rate (8e-5 with validation labels, 2e-5 without; default: %(default)s)",
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
    database.add_argument(
        "--write-mode",
        choices=WRITE_MODES,
        default="snapshot",
        help="snapshot: the corpus is the whole truth, rows of removed documents and vanished chunks are deleted "
        "(default); append: upserts only",
    )
    run.set_defaults(func=cmd_run)


def add_submit_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe submit`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    submit = add_command_parser(sub, "submit")
    submit.add_argument("template", help="compiled pipeline YAML, e.g. build/pipelines/tune_and_index.yaml")
    submit.add_argument("--project", required=True, help="Google Cloud project id")
    submit.add_argument("--location", default="us-central1", help="Vertex AI region (default: %(default)s)")
    submit.add_argument(
        "--pipeline-root",
        help="gs:// folder for the run's artifacts (required unless --request has gcsOutputDirectory)",
    )
    submit.add_argument("--service-account", help="service account the run uses")
    submit.add_argument("--network", help="VPC network, projects/<number>/global/networks/<name>")
    submit.add_argument(
        "--request",
        metavar="FILE",
        help="a Vertex AI pipelineJobs.create request body (JSON), as sent to tune-text-embedding-model: its "
        "runtimeConfig.parameterValues are the parameters (--param wins), its gcsOutputDirectory the pipeline root "
        "and its displayName the display name, where the flags do not give them",
    )
    submit.add_argument(
        "--encryption-spec-key-name",
        metavar="KMS_KEY",
        help="Cloud KMS key (CMEK) of the run, projects/P/locations/L/keyRings/R/cryptoKeys/K; also the default of "
        "the pipeline parameters encryption_spec_key_name and dataflow_kms_key",
    )
    submit.add_argument("--param", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    submit.add_argument("--label", action="append", metavar="KEY=VALUE", help="Vertex label (repeatable)")
    submit.add_argument(
        "--caching",
        choices=["on", "off", "default"],
        default="default",
        help="task caching (default: the pipeline's own, off for the tasks that read or write outside the run; "
        "on forces it for every task)",
    )
    submit.add_argument("--display-name", help="run display name (default: from the file name)")
    submit.set_defaults(func=cmd_submit)
