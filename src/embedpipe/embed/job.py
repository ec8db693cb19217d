"""The batch embedding job: its inputs checked on the launching machine, run on Beam's local runner or on Dataflow.

This module owns the batch job's entry points: resolving the corpus and previous vectors (`resolve_input`,
`list_files`), checking the settings (`prepare_config`), running the pipeline of `embedpipe.embed.pipeline`
and reporting its counts (`run_job`, `JobResult`), and its command line. How a job runs on Beam (local
runners, counters, model errors, cancelling on SIGTERM) is shared with the streaming job in
`embedpipe.embed.runtime`.

    python -m embedpipe.embed.job --input examples/scifact-mini/corpus.jsonl --output /tmp/vectors
    python -m embedpipe.embed.job --input gs://b/corpus.parquet --output gs://b/vectors --model gs://b/tuned \\
        --runner DataflowRunner --project P --region us-central1 --temp_location gs://b/tmp \\
        --sdk_container_image us-docker.pkg.dev/.../embedpipe-dataflow:0.1.0 --sdk_location container

Flags this module does not know are Beam pipeline options. `embedpipe embed` is the same with friendlier
Dataflow flags (`embedpipe.embed.settings.DataflowSettings`).

Example:
    >>> from embedpipe.embed.job import prepare_config, run_job          # doctest: +SKIP
    >>> config = prepare_config("examples/scifact-mini/corpus.jsonl", "/tmp/vectors")
    >>> run_job(config).metrics["documents_embedded"]
    400
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from embedpipe.embed import documents as docs
from embedpipe.embed.pipeline import DEAD_LETTER_FOLDER, METRIC_NAMES, VECTOR_SHARD_PREFIX, EmbedConfig
from embedpipe.embed.runtime import (
    LOCAL_RUNNERS,
    cancel_on_sigterm,
    counter_values,
    local_runner,
    model_errors_readable,
    with_worker_processes,
)
from embedpipe.embed.settings import DataflowSettings, DeadLetterLimits, ModelSettings, add_arguments, from_mapping
from embedpipe.embed.worker_logs import show_worker_lines
from embedpipe.models import ModelLoadError
from embedpipe.prompts import TASK_TYPES

_PARQUET_MAGIC = b"PAR1"
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _visible(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return bool(base) and not base.startswith(("_", "."))


def list_files(path: str) -> list[str]:
    """The file itself, or the visible files of a folder (local or gs://)."""
    from apache_beam.io.filesystems import FileSystems

    if not path.startswith("gs://"):
        if os.path.isdir(path):
            return sorted(
                os.path.join(path, n)
                for n in os.listdir(path)
                if _visible(n) and os.path.isfile(os.path.join(path, n))
            )
        return [path] if os.path.isfile(path) else []
    exact = FileSystems.match([path])[0].metadata_list
    if exact and exact[0].path == path:
        return [path]
    found = FileSystems.match([path.rstrip("/") + "/*"])[0].metadata_list
    return sorted(m.path for m in found if _visible(m.path) and m.size_in_bytes > 0)


def resolve_input(path: str, *, what: str = "corpus", expect: str | None = None) -> tuple[str, str]:
    """Turns a file or folder into a Beam file pattern and its format ("jsonl" or "parquet").

    A folder (e.g. a KFP Dataset artifact written in shards) is read whole; files whose names start with
    `_` or `.` are skipped. The format comes from the extension, else from the Parquet magic bytes.

    Raises:
        FileNotFoundError: when there is nothing to read.
        ValueError: when a folder mixes formats, or the format is not the expected one.
    """
    from apache_beam.io.filesystems import FileSystems

    files = list_files(path)
    if not files:
        raise FileNotFoundError(f"{what} {path}: no such file, or a folder with no files in it")

    def format_of(file: str) -> str:
        lower = file.lower()
        if lower.endswith(_PARQUET_SUFFIXES):
            return "parquet"
        if lower.endswith(_JSONL_SUFFIXES):
            return "jsonl"
        with FileSystems.open(file) as f:
            return "parquet" if f.read(4) == _PARQUET_MAGIC else "jsonl"

    formats = {format_of(f) for f in files}
    if len(formats) > 1:
        raise ValueError(f"{what} folder {path} mixes Parquet and JSONL files; give one format")
    fmt = formats.pop()
    if expect and fmt != expect:
        raise ValueError(f"{what} {path} must be {expect}, found {fmt}")
    if len(files) == 1:
        return files[0], fmt
    suffixes = {os.path.splitext(f)[1] for f in files}
    folder = path.rstrip("/")
    return (folder + "/*" + suffixes.pop() if len(suffixes) == 1 and "" not in suffixes else folder + "/[!_.]*"), fmt


def prepare_config(
    input: str,
    output: str,
    *,
    model: ModelSettings | str = "default",
    task_type: str = "RETRIEVAL_DOCUMENT",
    previous: str = "",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    num_shards: int = 0,
    database_uri: str = "",
    table: str = "embeddings",
    dead_letters: DeadLetterLimits | None = None,
) -> EmbedConfig:
    """Checks the job's inputs on the launching machine and resolves what workers need.

    Fails here, before any worker starts, on a missing corpus, a model folder that is not a model, bad
    model settings, an unknown task type, bad chunking parameters or a bad table name. See `EmbedConfig`
    for the arguments; `model` is a `ModelSettings`, or just the model reference (default settings).
    """
    from embedpipe.models import model_prompts, use_hf_token
    from embedpipe.prompts import resolve_prompts

    if database_uri:  # before any other work: the workers would carry a password in clear, and logs show it
        from embedpipe.vectorstore.conninfo import check_no_password

        check_no_password(database_uri, what="database_uri")
    settings = (ModelSettings(model=model) if isinstance(model, str) else model).checked()
    limits = (dead_letters or DeadLetterLimits()).checked()
    docs.check_chunking(chunk_tokens, chunk_overlap)
    if database_uri:
        from embedpipe.vectorstore.identifiers import split_table_name

        split_table_name(table)
    with use_hf_token(settings.hf_token_secret):  # a gated hub model's prompts
        prompts = resolve_prompts(task_type, model_prompts(settings.model))
    input_pattern, input_format = resolve_input(input)
    previous_pattern = ""
    if previous:
        previous_pattern, _ = resolve_input(previous, what="previous vectors", expect="parquet")
    return EmbedConfig(
        input_pattern=input_pattern,
        input_format=input_format,
        output=output,
        model_settings=settings,
        prompts=prompts,
        model_identity=settings.identity(),
        previous_pattern=previous_pattern,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        num_shards=num_shards,
        database_uri=database_uri,
        table=table,
        dead_letters=limits,
    )


class TooManyDeadLetters(ValueError):
    """The job ran, but too many records became dead letters: its vectors were not written.

    Attributes:
        metrics: The job's counts, as in `JobResult.metrics`.
    """

    def __init__(self, message: str, metrics: dict[str, float]):
        super().__init__(message)
        self.metrics = metrics


@dataclass
class JobResult:
    """How a job ended.

    Attributes:
        state: The runner's final state ("DONE").
        metrics: Counts (METRIC_NAMES), `seconds` and `documents_per_second`.
        job_id: The Dataflow job id ("" on the local runner).
        output: The folder holding the vector shards.
    """

    state: str
    metrics: dict[str, float] = field(default_factory=dict)
    job_id: str = ""
    output: str = ""

    def summary(self) -> str:
        m = self.metrics
        reused = f", {int(m['documents_reused']):,} reused" if m.get("documents_reused") else ""
        return (
            f"embedded {int(m.get('documents_embedded', 0)):,} documents ({int(m.get('chunks_embedded', 0)):,} vectors){reused}, "
            f"{int(m.get('dead_letters', 0)):,} dead letters, {int(m.get('documents_removed', 0)):,} removed; "
            f"{m.get('seconds', 0):.1f} s, {m.get('documents_per_second', 0):.1f} documents/s -> {self.output}"
        )


def run_job(
    config: EmbedConfig,
    beam_args: Sequence[str] = (),
    *,
    runner=None,
    on_submitted: Callable[[str, str, str], None] | None = None,
) -> JobResult:
    """Builds the pipeline, runs it, waits, and returns its counts.

    Args:
        config: From `prepare_config`.
        beam_args: Beam pipeline options (`--runner DataflowRunner --project ...`); default: the local runner.
        runner: A PipelineRunner instance to use instead of the one `--runner` names (tests pass a fake).
        on_submitted: Called with (project, region, job id) as soon as a remote job exists, before waiting
            (the component writes `gcp_resources` there).

    Raises:
        ModelLoadError: when the model cannot be loaded on a worker.
        RuntimeError: when the job ends in any state but DONE.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, SetupOptions, StandardOptions
    from apache_beam.runners.runner import PipelineState

    from embedpipe.embed.pipeline import build_pipeline

    options = PipelineOptions(list(beam_args))
    options.view_as(SetupOptions).save_main_session = False
    if runner is None and options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
        runner = local_runner(options)
    config = with_worker_processes(config, options)
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(pipeline, config)
    with model_errors_readable():
        result = pipeline.run()
        job_id = result.job_id() if hasattr(result, "job_id") else ""
        waiting = contextlib.nullcontext()
        if job_id:
            cloud = options.view_as(GoogleCloudOptions)
            logging.info("Dataflow job %s submitted", job_id)
            if on_submitted:
                on_submitted(cloud.project, cloud.region, job_id)
            # Cancelling the pipeline task (SIGTERM) cancels the Dataflow job too.
            waiting = cancel_on_sigterm(result)
        with waiting:
            state = result.wait_until_finish()
    state = str(state or result.state)
    if state not in (PipelineState.DONE, "DONE", "JOB_STATE_DONE"):
        raise RuntimeError(
            f"the embedding job {job_id or ''} ended in state {state}, not DONE; see its logs".replace("  ", " ")
        )
    seconds = time.monotonic() - started
    metrics: dict[str, float] = dict(counter_values(result, METRIC_NAMES))
    metrics["seconds"] = round(seconds, 3)
    metrics["documents_per_second"] = round(metrics["documents_read"] / seconds, 2) if seconds else 0.0
    too_many = config.dead_letters.exceeded(int(metrics["dead_letters"]), int(metrics["documents_read"]))
    if too_many:
        _remove_vector_shards(config.output)  # held back by the pipeline: empty, and not to be taken as output
        raise TooManyDeadLetters(
            f"the embedding job {job_id or ''} failed after it ran: {too_many}; no vectors were written (to "
            f"{config.output} or a database). The dead letters, each with its reason, are in "
            f"{config.output.rstrip('/')}/{DEAD_LETTER_FOLDER}/; fix the corpus, or raise max_dead_letter_share / "
            "max_dead_letters".replace("  ", " "),
            metrics,
        )
    return JobResult(state=str(state), metrics=metrics, job_id=job_id, output=config.output)


def _remove_vector_shards(output: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    pattern = FileSystems.join(output, VECTOR_SHARD_PREFIX + "*")
    found = [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
    if found:
        FileSystems.delete(found)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own flags (shared by `python -m embedpipe.embed.job` and `embedpipe embed`)."""
    parser.add_argument("--input", required=True, help="corpus: JSONL or Parquet file or folder, local or gs://")
    parser.add_argument("--output", required=True, help="folder for the vector Parquet shards, local or gs://")
    parser.add_argument(
        "--task-type",
        "--task_type",
        default="RETRIEVAL_DOCUMENT",
        type=str.upper,
        choices=TASK_TYPES,
        metavar="TASK_TYPE",
        help="selects the document prompt: %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--previous",
        default="",
        help="the previous run's output: unchanged documents are carried over, not re-embedded",
    )
    parser.add_argument(
        "--chunk-tokens",
        "--chunk_tokens",
        type=int,
        default=0,
        help="split documents into chunks of this many tokens (0 = no chunking)",
    )
    parser.add_argument(
        "--chunk-overlap",
        "--chunk_overlap",
        type=int,
        default=0,
        help="tokens shared by neighbouring chunks (default: %(default)s)",
    )
    parser.add_argument("--num-shards", type=int, default=0, help="vector shards to write (0 = the runner decides)")
    parser.add_argument(
        "--database-uri", default="", help="also upsert into this Postgres/pgvector database (stale rows deleted)"
    )
    parser.add_argument(
        "--table", default="embeddings", help="pgvector table for --database-uri (default: %(default)s)"
    )
    add_arguments(parser.add_argument_group("model"), ModelSettings)
    add_arguments(parser.add_argument_group("dead letters (checked after the job ran)"), DeadLetterLimits)


def config_from_args(args, dataflow: DataflowSettings | None = None) -> EmbedConfig:
    """The checked config of a parsed command line; with `dataflow`, the model shared as GPU workers need."""
    model = from_mapping(ModelSettings, args)
    if dataflow is not None:
        model = dataflow.model_on_workers(model)
    return prepare_config(
        args.input,
        args.output,
        model=model,
        task_type=args.task_type,
        previous=args.previous,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        num_shards=args.num_shards,
        database_uri=args.database_uri,
        table=args.table,
        dead_letters=from_mapping(DeadLetterLimits, args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m embedpipe.embed.job", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_job_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    show_worker_lines()  # with --direct_running_mode multi_processing: the workers' progress, readable
    try:
        config = config_from_args(args)
        result = run_job(config, beam_args)
    except (ModelLoadError, FileNotFoundError, ValueError) as err:
        print(f"embed job: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


__all__ = [
    "EmbedConfig",
    "JobResult",
    "TooManyDeadLetters",
    "list_files",
    "prepare_config",
    "resolve_input",
    "run_job",
    "main",
    "VECTOR_SHARD_PREFIX",
]

if __name__ == "__main__":
    sys.exit(main())
