"""Streaming mode of the embedding job: document changes from Pub/Sub, upserted and deleted in pgvector as they arrive.

    Pub/Sub (JSON) ─ParseMessages─┬─ dead letters ─ logged (+ dead-letter topic)
                                  └─ (id, change) ─ FixedWindows ─ GroupChangesById ─ LatestWins ─┐
      ┌── (id, doc) ─ embed_documents (the batch job's transforms) ─ rows ─┬─ GroupByShard ─ WriteChanges
      └── versions (one per document and window: upsert or delete) ───────┘

The documents are embedded by the batch job's own transforms (`embedpipe.embed.pipeline.embed_documents`:
the same prompts, chunking, content hashes and RunInference ModelHandler) and written by the vector
store's writer (`embedpipe.vectorstore.PgVectorWriter`: idempotent `ON CONFLICT (id)` upserts and
document deletes, retried on a dropped connection).

Modules, in the order a message meets them:
    messages: the message format, parsing (dead letters with the reason), the newest version per window.
    planning: which rows one write upserts and which documents it deletes (plain functions).
    writes: `WriteChanges`, applying a plan through the vector store's writer.
    pipeline: the Beam graph (`apply_changes`, `build_stream_pipeline`).
    config: `StreamConfig`, checked on the launching machine (`prepare_stream_config`).
    run: `run_stream` locally or on Dataflow, `StreamResult`.
    beam_patch: the workaround for a Beam direct-runner bug that loses counters (known Beam versions only).
    cli: `python -m embedpipe.embed.streaming`.

Pub/Sub cannot be reached from where this was developed: the tests replace `ReadFromPubSub` with Beam's
`TestStream` (see `build_stream_pipeline(source=...)`) on the local runner, against a real Postgres.

Example:
    >>> config = prepare_stream_config(subscription="projects/my-project/subscriptions/docs",  # doctest: +SKIP
    ...                                database_uri="postgresql://localhost/db", table="docs")
    >>> from embedpipe.embed.settings import DataflowSettings
    >>> dataflow = DataflowSettings(project="my-project", location="us-central1", temp_location="gs://b/tmp")
    >>> run_stream(config, dataflow.beam_args(kind="embed-stream", streaming=True))  # doctest: +SKIP
"""

from embedpipe.embed.streaming.cli import config_and_args_from_argv, main
from embedpipe.embed.streaming.config import StreamConfig, check_source, prepare_stream_config, prepare_vector_table
from embedpipe.embed.streaming.messages import parse_message
from embedpipe.embed.streaming.pipeline import StreamOutputs, apply_changes, build_stream_pipeline
from embedpipe.embed.streaming.planning import WritePlan, plan_writes
from embedpipe.embed.streaming.run import STREAM_METRIC_NAMES, StreamResult, run_stream

__all__ = [
    "STREAM_METRIC_NAMES",
    "StreamConfig",
    "StreamOutputs",
    "StreamResult",
    "WritePlan",
    "apply_changes",
    "build_stream_pipeline",
    "check_source",
    "config_and_args_from_argv",
    "main",
    "parse_message",
    "plan_writes",
    "prepare_stream_config",
    "prepare_vector_table",
    "run_stream",
]
