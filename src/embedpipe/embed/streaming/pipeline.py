"""The streaming job's Beam graph: messages in, the vector table kept up to date, dead letters out.

    Pub/Sub (JSON) ─ParseMessages─┬─ dead letters (and WriteChanges' stale messages) ─ logged (+ dead-letter topic)
                                  └─ (id, change) ─ FixedWindows ─ GroupChangesById ─ LatestWins ─┐
      ┌── (id, doc) ─ embed_documents (the batch job's transforms) ─ rows ─┬─ GroupByShard ─ WriteChanges
      └── versions (one per document and window: upsert or delete) ───────┘

The documents are embedded by the batch job's own transforms (`embedpipe.embed.pipeline.embed_documents`:
the same prompts, chunking, content hashes and RunInference ModelHandler); the messages are parsed and
deduplicated in `embedpipe.embed.streaming.messages`, and written in `embedpipe.embed.streaming.writes`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed.pipeline import embed_documents
from embedpipe.embed.streaming.config import StreamConfig
from embedpipe.embed.streaming.messages import LatestWins, ParseMessages
from embedpipe.embed.streaming.planning import document_of, shard_of
from embedpipe.embed.streaming.writes import WriteChanges
from embedpipe.embed.types import DeadLetter

log = logging.getLogger(__name__)


class StreamOutputs(NamedTuple):
    dead_letters: Any  # PCollection of `DeadLetter`
    writes: Any  # PCollection of one summary per write (`upserted`, `deleted` document ids, `rows`, `rows_removed`)


def apply_changes(messages, config: StreamConfig) -> StreamOutputs:
    """The streaming transforms: messages (bytes) -> the database. Returns the dead letters and write summaries."""
    from apache_beam.transforms import trigger, window
    from apache_beam.utils.timestamp import Duration

    keyed = tuple[
        str, Any
    ]  # what Beam infers from the DoFns' generators (tagged outputs included) fails its key check
    parsed = messages | "ParseMessages" >> beam.ParDo(ParseMessages()).with_output_types(keyed).with_outputs(
        "dead", main="changes"
    )
    decided = (
        parsed.changes
        | "FixedWindows"
        >> beam.WindowInto(
            window.FixedWindows(config.window_seconds),
            # Late messages (behind the watermark) are written when they arrive, not dropped.
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration(seconds=config.allowed_lateness_seconds),
        )
        | "GroupChangesById" >> beam.GroupByKey()
        | "LatestWins"
        >> beam.ParDo(LatestWins(config.embed)).with_output_types(keyed).with_outputs("versions", main="upserts")
    )
    # No previous run to carry vectors over from: an empty PCollection windowed like the documents.
    no_previous = decided.upserts | "NoPreviousRows" >> beam.FlatMap(lambda _: ())
    rows, repeated, _ = embed_documents(decided.upserts, config.embed, previous=no_previous)
    shards, chunked = config.write_shards, bool(config.embed.chunk_tokens)
    writes = (
        (
            rows | "RowsByShard" >> beam.Map(lambda r: (shard_of(document_of(r, chunked), shards), ("row", r))),
            decided.versions | "VersionsByShard" >> beam.Map(lambda v: (shard_of(v.id, shards), ("version", v))),
        )
        | "AllChanges" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteChanges"
        >> beam.ParDo(WriteChanges(config.database, config.table, chunked)).with_outputs("dead", main="writes")
    )
    # `repeated` stays empty (LatestWins leaves one document per id); kept in case that ever changes.
    repeated = repeated | "RepeatedIdsUnwindowed" >> beam.WindowInto(window.GlobalWindows())
    stale = writes.dead | "StaleUnwindowed" >> beam.WindowInto(window.GlobalWindows())
    dead = (parsed.dead, repeated, stale) | "AllDeadLetters" >> beam.Flatten()
    return StreamOutputs(dead, writes.writes)


def _log_dead_letter(dead: DeadLetter) -> DeadLetter:
    log.warning("dead letter (id %s): %s; message: %s", dead.id, dead.reason, dead.record)
    return dead


def build_stream_pipeline(pipeline, config: StreamConfig, source=None) -> StreamOutputs:
    """Adds the streaming job to `pipeline`.

    Args:
        pipeline: A `beam.Pipeline` with the `streaming` option set.
        config: From `prepare_stream_config`.
        source: A PTransform producing the message bodies (bytes) with their publish times as timestamps;
            default the config's file of messages, or `ReadFromPubSub` of its subscription or topic. Tests
            pass a `TestStream`.
    """
    if source is None:
        from embedpipe.embed.streaming.sources import messages_from_file, pubsub_source

        source = (
            messages_from_file(config.messages)
            if config.messages
            else pubsub_source(config.subscription, config.topic)
        )
    outputs = apply_changes(pipeline | "ReadMessages" >> source, config)
    logged = outputs.dead_letters | "LogDeadLetters" >> beam.Map(_log_dead_letter)
    if config.dead_letter_topic:
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        (
            logged
            | "DeadLettersToJson"
            >> beam.Map(lambda d: json.dumps(d.to_dict(), ensure_ascii=False, default=str).encode("utf-8"))
            | "PublishDeadLetters" >> WriteToPubSub(config.dead_letter_topic)
        )
    return outputs


__all__ = ["StreamOutputs", "apply_changes", "build_stream_pipeline"]
