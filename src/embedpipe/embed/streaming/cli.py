"""Command line of the streaming job: document changes from Pub/Sub, upserted and deleted in pgvector as they arrive.

    python -m embedpipe.embed.streaming --subscription projects/P/subscriptions/S \\
        --database-uri postgresql://user@10.0.0.5/db --table docs --model gs://b/tuned \\
        --runner DataflowRunner --project P --region us-central1 --temp-location gs://b/tmp
    python -m embedpipe.embed.streaming --subscription projects/P/subscriptions/S --target alloydb \\
        --instance projects/P/locations/L/clusters/C/instances/I --password-secret projects/P/secrets/db \\
        --table docs --runner DataflowRunner --project P --temp-location gs://b/tmp
    python -m embedpipe.embed.streaming --messages changes.jsonl --table docs   # locally, a file of messages

Messages are JSON objects:

    {"id": "d1", "title": "...", "text": "...", "metadata": {...}}     new or changed document
    {"id": "d1", "delete": true}                                       remove it (and its chunk rows `d1#n`)

`_id` is accepted for `id`; optional `sequence` (an integer) and `updated_at` (RFC 3339 time) order the
versions of a document within a window (see `embedpipe.embed.streaming.messages`). Bad messages become
dead letters: counted, logged with the reason, and published to --dead-letter-topic when one is given.

Flags this command does not know are Beam pipeline options. `embedpipe embed-stream` (alias `embedpipe
stream`) is the same command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from embedpipe.embed.settings import DataflowSettings, ModelSettings, add_arguments, from_mapping
from embedpipe.embed.streaming.config import (
    StreamConfig,
    check_runner_source,
    connection_settings,
    prepare_stream_config,
)
from embedpipe.embed.streaming.run import run_stream
from embedpipe.prompts import TASK_TYPES
from embedpipe.vectorstore.connections import ConnectionSettings


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """The streaming job's flags (shared by `python -m embedpipe.embed.streaming` and `embedpipe embed-stream`)."""
    source = parser.add_argument_group("source and target")
    source.add_argument("--subscription", default="", help="Pub/Sub subscription projects/P/subscriptions/S")
    source.add_argument("--topic", default="", help="Pub/Sub topic projects/P/topics/T (instead of a subscription)")
    source.add_argument(
        "--messages",
        default="",
        help="local runner: a file (or folder) of change messages, one JSON per line, played in file order",
    )
    source.add_argument(
        "--dead-letter-topic", default="", help="also publish dead letters (JSON with the reason) to this topic"
    )
    source.add_argument(
        "--database-uri",
        default="",
        help="Postgres/pgvector URI without a password ('' with --target postgres: the embedded database)",
    )
    source.add_argument("--table", default="embeddings", help="pgvector table (default: %(default)s)")
    source.add_argument(
        "--skip-table-check",
        action="store_true",
        help="do not create/check the table from this machine (it cannot reach the database)",
    )
    database = parser.add_argument_group(
        "database connection (as upload_vectors: --target postgres|alloydb|cloudsql, --instance, --database, --user, "
        "--password-env|--password-secret|--iam-auth, --ip-type PRIVATE|PUBLIC|PSC)"
    )
    add_arguments(database, ConnectionSettings, skip=("uri", "connector_factory", "secret_client"))
    model = parser.add_argument_group("model")
    model.add_argument(
        "--skip-model-check", action="store_true", help="do not load the model on this machine before submitting"
    )
    model.add_argument(
        "--task-type",
        default="RETRIEVAL_DOCUMENT",
        type=str.upper,
        choices=TASK_TYPES,
        metavar="TASK_TYPE",
        help="selects the document prompt: %(choices)s (default: %(default)s)",
    )
    model.add_argument(
        "--chunk-tokens", type=int, default=0, help="split documents into chunks of this many tokens (0 = no chunking)"
    )
    model.add_argument(
        "--chunk-overlap", type=int, default=0, help="tokens shared by neighbouring chunks (default: %(default)s)"
    )
    # one model per GPU on GPU workers is decided by DataflowSettings.model_on_workers
    add_arguments(model, ModelSettings, skip=("share_across_processes", "model_copies"))
    window = parser.add_argument_group("micro-batches")
    window.add_argument(
        "--window-seconds",
        type=float,
        default=5.0,
        help="fixed window (publish time) per write (default: %(default)s)",
    )
    window.add_argument(
        "--allowed-lateness-seconds",
        type=int,
        default=3600,
        help="late messages are still written this long after their window (default: %(default)s)",
    )
    window.add_argument(
        "--write-shards", type=int, default=4, help="database writers per window (default: %(default)s)"
    )
    cloud = parser.add_argument_group("runner (other flags are passed to Beam)")
    cloud.add_argument(
        "--runner",
        default="DirectRunner",
        choices=["DirectRunner", "DataflowRunner"],
        help="Beam's local runner (with --messages) or Google Cloud Dataflow (default: %(default)s)",
    )
    add_arguments(cloud, DataflowSettings)
    cloud.add_argument(
        "--streaming", action="store_true", help="accepted for Beam's spelling; this job always streams"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedpipe.embed.streaming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stream_arguments(parser)
    return parser


def config_and_args_from_args(args, extra: Sequence[str] = ()) -> tuple[StreamConfig, list[str]]:
    """A parsed command line -> a checked StreamConfig and the Beam options to run it with."""
    remote = args.runner == "DataflowRunner"
    check_runner_source(remote, bool(args.messages))
    connection = connection_settings(vars(args), remote=remote)
    dataflow = from_mapping(DataflowSettings, args)
    model = from_mapping(ModelSettings, args)
    if remote:
        model = dataflow.model_on_workers(model)
    config = prepare_stream_config(
        args.subscription,
        args.topic,
        messages=args.messages,
        connection=connection,
        table=args.table,
        model=model,
        task_type=args.task_type,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        window_seconds=args.window_seconds,
        allowed_lateness_seconds=args.allowed_lateness_seconds,
        write_shards=args.write_shards,
        dead_letter_topic=args.dead_letter_topic,
        check_model=not args.skip_model_check,
        prepare_table=not args.skip_table_check,
    )
    if not remote:
        return config, list(extra)
    return config, dataflow.beam_args(kind="embed-stream", streaming=True) + list(extra)


def config_and_args_from_argv(argv: Sequence[str] | None = None) -> tuple[StreamConfig, list[str]]:
    """Parses the command line into a checked StreamConfig and the Beam options to run it with."""
    args, extra = _parser().parse_known_args(argv)
    return config_and_args_from_args(args, extra)


def main(argv: Sequence[str] | None = None) -> int:
    from embedpipe.models import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config, beam_args = config_and_args_from_argv(argv)
        result = run_stream(config, beam_args)
    except (ModelLoadError, ValueError, FileNotFoundError) as err:
        print(f"embed stream: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


__all__ = ["add_stream_arguments", "config_and_args_from_args", "config_and_args_from_argv", "main"]
