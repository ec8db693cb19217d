"""Streaming mode of the embedding job: document changes from Pub/Sub, upserted and deleted in pgvector as they arrive.

    Pub/Sub (JSON) ─ParseMessages─┬─ dead letters ─ logged (+ dead-letter topic)
                                  └─ (id, change) ─ FixedWindows ─ GroupChangesById ─ LatestWins ─┐
      ┌── (id, doc) ─ embed_documents (the batch job's transforms) ─ rows ─┬─ GroupByShard ─ WriteChanges
      └── versions (one per document and window: upsert or delete) ───────┘

The documents are embedded by the batch job's own transforms (`embedpipe.embed.pipeline.embed_documents`:
the same prompts, chunking, content hashes and RunInference ModelHandler) and written by the vector
store's writer (`embedpipe.vectorstore.PgVectorWriter`: idempotent `ON CONFLICT (id)` upserts, retried
on a dropped connection).

Messages are JSON objects:

    {"id": "d1", "title": "...", "text": "...", "metadata": {...}}     new or changed document
    {"id": "d1", "delete": true}                                       remove it (and its chunk rows `d1#n`)

`_id` is accepted for `id`. Optional `sequence` (an integer) and `updated_at` (RFC 3339 time) order the
versions of a document. Messages that are not JSON objects, lack an id, lack text (upserts), or carry a
bad `delete`/`sequence`/`updated_at`/`metadata` become dead letters: counted (`embedpipe:dead_letters`),
logged with the reason, and published to `dead_letter_topic` when one is given; never dropped silently.

Ordering: messages are cut into fixed windows of `window_seconds` by their element timestamp (the
Pub/Sub publish time). Within a window, the newest version of each document wins: the greatest
`sequence`, then the latest `updated_at`, then the latest publish time, then a delete over an upsert;
the others are counted as `messages_superseded`. Windows are written in order (the write of a window
waits for the watermark, so every earlier window's rows are in); `sequence` and `updated_at` only
decide within a window, across windows the publish time orders. A message that arrives after its
window was written (late; rare with publish-time timestamps) is still written, within
`allowed_lateness_seconds`, when it arrives, even over a newer version; if it meets its window's
on-time rows in one write, the newest wins there.

Pub/Sub cannot be reached from where this was developed: the tests replace `ReadFromPubSub` with Beam's
`TestStream` (see `build_stream_pipeline(source=...)`) on the local runner, against a real Postgres.

    python -m embedpipe.embed.streaming --subscription projects/P/subscriptions/S \\
        --database-uri postgresql://user@10.0.0.5/db --table docs --model gs://b/tuned \\
        --runner DataflowRunner --project P --region us-central1 --temp-location gs://b/tmp

Example:
    >>> config = prepare_stream_config(subscription="projects/my-project/subscriptions/docs",  # doctest: +SKIP
    ...                                database_uri="postgresql://localhost/db", table="docs")
    >>> run_stream(config, stream_dataflow_args(project="my-project", region="us-central1",  # doctest: +SKIP
    ...                                         temp_location="gs://b/tmp"))
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from embedpipe.embed import documents as docs
from embedpipe.embed.pipeline import NAMESPACE, EmbedConfig, embed_documents

log = logging.getLogger(__name__)

STREAM_METRIC_NAMES = (
    "messages_read",  # Pub/Sub messages, good or bad
    "messages_superseded",  # older versions of a document that a newer one in the same window replaced
    "dead_letters",
    "documents_embedded",
    "chunks_embedded",
    "documents_upserted",  # documents written (their rows upserted, their vanished chunks deleted)
    "documents_deleted",  # delete messages applied
    "database_rows_written",
    "database_rows_deleted",
)
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


@dataclass
class StreamConfig:
    """What the streaming job reads, embeds and writes; resolved on the launching machine.

    Attributes:
        embed: The batch job's configuration (model, prompts, model identity, chunking, batch sizes); its
            input/output fields are unused here.
        subscription: `projects/P/subscriptions/S` to read (preferred: messages published while the job
            is down wait there).
        topic: `projects/P/topics/T` to read through a subscription Dataflow creates (used when no
            subscription is given).
        database: A Postgres URI, or `embedpipe.vectorstore.ConnectionSettings` (AlloyDB, Cloud SQL).
        table: The pgvector table (`table` or `schema.table`).
        window_seconds: Length of the fixed windows: the micro-batches that are deduplicated and written.
        allowed_lateness_seconds: How long after its window a late message is still written.
        write_shards: Database writers per window (each document always goes to the same one).
        dead_letter_topic: `projects/P/topics/T` the dead letters are published to ("" = logged only).
    """

    embed: EmbedConfig
    subscription: str = ""
    topic: str = ""
    database: Any = ""
    table: str = "embeddings"
    window_seconds: float = 5.0
    allowed_lateness_seconds: int = 3600
    write_shards: int = 4
    dead_letter_topic: str = ""
    dimension: int = field(default=0, repr=False)  # the model's output size, when it was checked


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


# -- messages -----------------------------------------------------------------------------------


def _version_time(value) -> float | str:
    """`updated_at` as seconds since the epoch, or the reason it is not a time."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
            return "field 'updated_at' has no time zone; write it like 2024-05-01T12:00:00Z"
    return f"field 'updated_at' must be an RFC 3339 time like 2024-05-01T12:00:00Z, got {value!r}"


def parse_message(data: bytes | str, publish_time_micros: int = 0) -> dict:
    """One Pub/Sub message body -> a change or a dead letter.

    A change is `{"id", "delete", "doc", "order"}`: `doc` is the parsed document (None for a delete), and
    `order` sorts the versions of one document, the newest last (see the module docstring).

    Example:
        >>> parse_message(b'{"id": "d1", "delete": true}', 5)["order"]
        (False, 0, False, 0.0, 5, 1, '')
        >>> parse_message(b'{"id": "d1"}')["reason"]
        "field 'text' is missing; every document needs text to embed"
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return docs.dead_letter(None, f"invalid JSON: {err.msg} at column {err.colno}; each message must be one JSON object", text)
    if not isinstance(record, dict):
        return docs.dead_letter(None, f'expected a JSON object like {{"id": "...", "text": "..."}}, got a {type(record).__name__}', text)
    doc = docs.parse_record(record)
    doc_id = doc["id"]  # None only when the id itself is missing or bad
    delete = record.get("delete", False)
    if delete is None:
        delete = False
    if not isinstance(delete, bool):
        return docs.dead_letter(doc_id, f"field 'delete' must be true or false, got {delete!r}", record)
    if delete and doc_id is not None:
        doc = None  # a delete needs nothing but the id
    elif docs.is_dead_letter(doc):
        return doc
    sequence = record.get("sequence")
    if sequence is not None and (not isinstance(sequence, int) or isinstance(sequence, bool)):
        return docs.dead_letter(doc_id, f"field 'sequence' must be an integer, got {sequence!r}", record)
    updated_at = record.get("updated_at")
    if updated_at is not None:
        updated_at = _version_time(updated_at)
        if isinstance(updated_at, str):
            return docs.dead_letter(doc_id, updated_at, record)
    order = (
        sequence is not None, sequence or 0,
        updated_at is not None, updated_at or 0.0,
        int(publish_time_micros),
        int(delete),
        "" if doc is None else doc["title"] + "\0" + doc["text"],  # identical times: any fixed choice
    )
    return {"id": doc_id, "delete": delete, "doc": doc, "order": order}


class ParseMessages(beam.DoFn):
    """Pub/Sub message (bytes, or a PubsubMessage) -> `(id, change)`; bad messages to the `dead` output."""

    def __init__(self):
        self._read = _counter("messages_read")
        self._dead = _counter("dead_letters")

    def process(self, message, timestamp=beam.DoFn.TimestampParam):
        self._read.inc()
        change = parse_message(getattr(message, "data", message), timestamp.micros)
        if docs.is_dead_letter(change):
            self._dead.inc()
            yield beam.pvalue.TaggedOutput("dead", change)
            return
        yield change["id"], change


def document_hash(doc: dict, config: EmbedConfig) -> str:
    """The content hash the batch job's `Decide` gives this document (and its rows carry)."""
    formatted = config.prompts.format_documents([doc["text"]], [doc["title"]])[0]
    return docs.content_hash(formatted, config.model_identity, config.chunking)


class LatestWins(beam.DoFn):
    """Per document and window: the newest change wins.

    Outputs `(id, doc)` to embed for an upsert, and on `versions` one record per winner
    (`{"id", "order", "hash"}`, hash None for a delete) that travels to the write beside the rows.
    """

    def __init__(self, config: EmbedConfig):
        self._config = config
        self._superseded = _counter("messages_superseded")

    def process(self, element):
        doc_id, changes = element
        changes = sorted(changes, key=lambda c: c["order"])
        if len(changes) > 1:
            self._superseded.inc(len(changes) - 1)
        newest = changes[-1]
        digest = None if newest["delete"] else document_hash(newest["doc"], self._config)
        yield beam.pvalue.TaggedOutput("versions", {"id": doc_id, "order": newest["order"], "hash": digest})
        if not newest["delete"]:
            yield doc_id, newest["doc"]


# -- writing ------------------------------------------------------------------------------------


def shard_of(doc_id: str, shards: int) -> int:
    """A stable shard (the same in every worker process, unlike `hash`) for a document id."""
    return zlib.crc32(doc_id.encode("utf-8")) % max(shards, 1)


def document_of(row: dict, chunked: bool) -> str:
    """The document a vector row belongs to: chunk rows carry it in `metadata.document_id`."""
    return json.loads(row["metadata"])["document_id"] if chunked else row["id"]


class WritePlan(NamedTuple):
    rows: list  # vector rows to upsert, one per id
    upserted: list  # their documents (rows of these documents not in `rows` are deleted)
    deleted: list  # documents to delete


def plan_writes(ops, chunked: bool) -> WritePlan:
    """Decides one write from the rows and version records that met in it.

    Normally each document has one version record and its rows. A late message can bring a second
    version of a document into the same write: the newest version that is complete here (a delete, or
    an upsert whose rows, matched by content hash, are here) wins. Rows whose version record was in an
    earlier write are written as they are.

    Args:
        ops: `("row", vector row)` and `("version", {"id", "order", "hash"})` pairs.
        chunked: Whether the rows are chunks (`docid#n`).
    """
    versions, rows = defaultdict(list), defaultdict(list)
    for kind, item in ops:
        if kind == "row":
            rows[document_of(item, chunked)].append(item)
        else:
            versions[item["id"]].append(item)
    plan = WritePlan([], [], [])
    for doc_id in sorted(set(versions) | set(rows)):
        candidates = []
        for version in versions.get(doc_id, ()):
            if version["hash"] is None:
                candidates.append((tuple(version["order"]), None))
            else:
                matched = [r for r in rows.get(doc_id, ()) if r["content_hash"] == version["hash"]]
                if matched:
                    candidates.append((tuple(version["order"]), matched))
        if candidates:
            chosen = max(candidates, key=lambda c: c[0])[1]
        elif rows.get(doc_id):
            chosen = rows[doc_id]
        else:
            continue  # an upsert whose rows are still being embedded: they come with a later write
        if chosen is None:
            plan.deleted.append(doc_id)
        else:
            plan.rows.extend({r["id"]: r for r in chosen}.values())
            plan.upserted.append(doc_id)
    return plan


def delete_documents(writer, doc_ids: Sequence[str], keep_ids: Sequence[str] = ()) -> int:
    """Deletes the rows of these documents (the row `id` and its chunk rows `id#n`) except `keep_ids`.

    One transaction through the writer (retried like its writes). Chunk rows are found by
    `metadata->>'document_id'`; on a large chunked table an expression index on it keeps this fast.

    Returns:
        The number of rows deleted.
    """
    from psycopg import sql

    if not doc_ids:
        return 0

    def work(session) -> int:
        if writer.existing_column_type(session) is None:
            return 0
        query = sql.SQL(
            "WITH gone AS (DELETE FROM {} WHERE (id = ANY(%s::text[]) OR (metadata->>'document_id' = ANY(%s::text[])"
            " AND starts_with(id, (metadata->>'document_id') || %s))) AND NOT (id = ANY(%s::text[])) RETURNING 1)"
            " SELECT count(*) FROM gone"
        ).format(writer.ident)
        ids = [str(i) for i in doc_ids]
        return int(session.execute(query, (ids, ids, docs.CHUNK_SEPARATOR, [str(i) for i in keep_ids]))[0][0])

    return writer.run_transaction(work)[0]


def vector_batch(rows: Sequence[dict]):
    import numpy as np

    from embedpipe.vectorstore import VectorBatch

    return VectorBatch(
        [r["id"] for r in rows],
        np.asarray([r["embedding"] for r in rows], dtype=np.float32),
        [r["content"] for r in rows],
        [r["metadata"] for r in rows],
        source="embed stream",
    )


class WriteChanges(beam.DoFn):
    """One window's changes of one shard -> the database: deletes, one upsert, the documents' vanished chunks."""

    def __init__(self, database, table: str, chunked: bool):
        self._database, self._table, self._chunked = database, table, chunked
        self._upserted = _counter("documents_upserted")
        self._deleted = _counter("documents_deleted")
        self._rows_written = _counter("database_rows_written")
        self._rows_deleted = _counter("database_rows_deleted")

    def setup(self):
        from embedpipe.vectorstore import PgVectorWriter

        self._writer = PgVectorWriter(self._database, self._table)

    def process(self, element, window=beam.DoFn.WindowParam):
        _, ops = element
        plan = plan_writes(ops, self._chunked)
        removed = delete_documents(self._writer, plan.deleted)
        if plan.rows:
            self._writer.write(vector_batch(plan.rows))
            # A changed document with fewer chunks than before: its last chunks' rows go.
            removed += delete_documents(self._writer, plan.upserted, keep_ids=[r["id"] for r in plan.rows])
        self._upserted.inc(len(plan.upserted))
        self._deleted.inc(len(plan.deleted))
        self._rows_written.inc(len(plan.rows))
        self._rows_deleted.inc(removed)
        log.info("window %s: upserted %d documents (%d rows), deleted %d documents (%d rows removed)",
                 window, len(plan.upserted), len(plan.rows), len(plan.deleted), removed)
        yield {"upserted": plan.upserted, "deleted": plan.deleted, "rows": len(plan.rows), "rows_removed": removed}


# -- the pipeline ---------------------------------------------------------------------------------


class StreamOutputs(NamedTuple):
    dead_letters: Any  # PCollection of `{"id", "reason", "record"}`
    writes: Any  # PCollection of one summary per write (`upserted`, `deleted` document ids, `rows`, `rows_removed`)


def apply_changes(messages, config: StreamConfig) -> StreamOutputs:
    """The streaming transforms: messages (bytes) -> the database. Returns the dead letters and write summaries."""
    from apache_beam.transforms import trigger, window
    from apache_beam.utils.timestamp import Duration

    keyed = Tuple[str, Any]  # what Beam infers from the DoFns' generators (tagged outputs included) fails its key check
    parsed = messages | "ParseMessages" >> beam.ParDo(ParseMessages()).with_output_types(keyed).with_outputs("dead", main="changes")
    decided = (
        parsed.changes
        | "FixedWindows" >> beam.WindowInto(
            window.FixedWindows(config.window_seconds),
            # Late messages (behind the watermark) are written when they arrive, not dropped.
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            allowed_lateness=Duration(seconds=config.allowed_lateness_seconds),
        )
        | "GroupChangesById" >> beam.GroupByKey()
        | "LatestWins" >> beam.ParDo(LatestWins(config.embed)).with_output_types(keyed).with_outputs("versions", main="upserts")
    )
    # No previous run to carry vectors over from: an empty PCollection windowed like the documents.
    no_previous = decided.upserts | "NoPreviousRows" >> beam.FlatMap(lambda _: ())
    rows, repeated, _ = embed_documents(decided.upserts, config.embed, previous=no_previous)
    shards, chunked = config.write_shards, bool(config.embed.chunk_tokens)
    writes = (
        (
            rows | "RowsByShard" >> beam.Map(lambda r: (shard_of(document_of(r, chunked), shards), ("row", r))),
            decided.versions | "VersionsByShard" >> beam.Map(lambda v: (shard_of(v["id"], shards), ("version", v))),
        )
        | "AllChanges" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteChanges" >> beam.ParDo(WriteChanges(config.database, config.table, chunked))
    )
    # `repeated` stays empty (LatestWins leaves one document per id); kept in case that ever changes.
    repeated = repeated | "RepeatedIdsUnwindowed" >> beam.WindowInto(window.GlobalWindows())
    dead = (parsed.dead, repeated) | "AllDeadLetters" >> beam.Flatten()
    return StreamOutputs(dead, writes)


def _log_dead_letter(dead: dict) -> dict:
    log.warning("dead letter (id %s): %s; message: %s", dead.get("id"), dead["reason"], dead["record"])
    return dead


def build_stream_pipeline(pipeline, config: StreamConfig, source=None) -> StreamOutputs:
    """Adds the streaming job to `pipeline`.

    Args:
        pipeline: A `beam.Pipeline` with the `streaming` option set.
        config: From `prepare_stream_config`.
        source: A PTransform producing the message bodies (bytes) with their publish times as timestamps;
            default `ReadFromPubSub` of the config's subscription or topic. Tests pass a `TestStream`.
    """
    if source is None:
        from apache_beam.io.gcp.pubsub import ReadFromPubSub

        source = ReadFromPubSub(subscription=config.subscription or None, topic=None if config.subscription else config.topic)
    outputs = apply_changes(pipeline | "ReadMessages" >> source, config)
    logged = outputs.dead_letters | "LogDeadLetters" >> beam.Map(_log_dead_letter)
    if config.dead_letter_topic:
        from apache_beam.io.gcp.pubsub import WriteToPubSub

        (
            logged
            | "DeadLettersToJson" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False, default=str).encode("utf-8"))
            | "PublishDeadLetters" >> WriteToPubSub(config.dead_letter_topic)
        )
    return outputs


# -- configuration and running ------------------------------------------------------------------


def check_source(subscription: str = "", topic: str = "") -> None:
    """Raises ValueError unless exactly one well-formed Pub/Sub subscription or topic is given."""
    if not subscription and not topic:
        raise ValueError("give --subscription projects/P/subscriptions/S (or --topic projects/P/topics/T) to read from")
    if subscription and topic:
        raise ValueError("give --subscription or --topic, not both")
    if subscription and not _SUBSCRIPTION.match(subscription):
        raise ValueError(f"subscription {subscription!r} must look like projects/PROJECT/subscriptions/NAME")
    if topic and not _TOPIC.match(topic):
        raise ValueError(f"topic {topic!r} must look like projects/PROJECT/topics/NAME")
    from apache_beam.io.gcp.pubsub import parse_subscription, parse_topic

    # Beam's own checks (project id and name rules), here rather than when the pipeline is built
    if subscription:
        parse_subscription(subscription)
    else:
        parse_topic(topic)


def prepare_stream_config(
    subscription: str = "",
    topic: str = "",
    *,
    database_uri: str = "",
    connection=None,
    table: str = "embeddings",
    model: str = "default",
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    batch_size: int = 32,
    inference_batch_size: int = 1024,
    tokens_per_batch: int = 0,
    output_dimensionality: int = 0,
    device: str = "",
    precision: str = "auto",
    backend: str = "torch",
    share_across_processes: bool = False,
    model_copies: int = 1,
    window_seconds: float = 5.0,
    allowed_lateness_seconds: int = 3600,
    write_shards: int = 4,
    dead_letter_topic: str = "",
    check_model: bool = True,
    prepare_table: bool = True,
) -> StreamConfig:
    """Checks the streaming job's settings on the launching machine, before anything is read or written.

    A streaming worker that cannot load its model would retry forever, so by default the model is loaded
    here once (on CPU) and embeds one text; the table is created if missing (with its index), or its
    dimension checked against the model's. See `StreamConfig` and `embedpipe.embed.job.prepare_config`
    for the arguments.

    Args:
        database_uri: Postgres URI of the vector database; or give `connection`.
        connection: `embedpipe.vectorstore.ConnectionSettings` (AlloyDB / Cloud SQL connectors).
        check_model: Load the model here (turn off where the launcher cannot hold it).
        prepare_table: Create or check the table here (turn off where the launcher cannot reach the database).

    Raises:
        ModelLoadError: the model folder is missing, is not a model, or does not load.
        ValueError: bad source, chunking, batch sizes, window, table name, or a table of another dimension.
    """
    from embedpipe.embed.handler import load_encoder
    from embedpipe.models import model_identity, model_prompts
    from embedpipe.embed.job import check_model_options
    from embedpipe.models import ModelLoadError
    from embedpipe.prompts import resolve_prompts
    from embedpipe.vectorstore.identifiers import split_table_name

    check_source(subscription, topic)
    if dead_letter_topic:
        if not _TOPIC.match(dead_letter_topic):
            raise ValueError(f"dead_letter_topic {dead_letter_topic!r} must look like projects/PROJECT/topics/NAME")
        from apache_beam.io.gcp.pubsub import parse_topic

        parse_topic(dead_letter_topic)
    if not database_uri and connection is None:
        raise ValueError("give database_uri (or connection settings) for the vector database to write to")
    split_table_name(table)
    docs.check_chunking(chunk_tokens, chunk_overlap)
    check_model_options(batch_size=batch_size, inference_batch_size=inference_batch_size, tokens_per_batch=tokens_per_batch,
                        output_dimensionality=output_dimensionality, backend=backend, precision=precision)
    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    if allowed_lateness_seconds < 0 or write_shards < 1:
        raise ValueError(f"allowed_lateness_seconds must be >= 0 and write_shards >= 1, got {allowed_lateness_seconds}, {write_shards}")
    embed = EmbedConfig(
        input_pattern=subscription or topic,
        input_format="pubsub",
        output="",
        model=model,
        prompts=resolve_prompts(task_type, model_prompts(model)),
        model_identity=model_identity(model, backend=backend, output_dimensionality=output_dimensionality),
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        inference_batch_size=max(inference_batch_size, batch_size),
        tokens_per_batch=tokens_per_batch,
        output_dimensionality=output_dimensionality,
        device=device,
        precision=precision,
        backend=backend,
        share_across_processes=share_across_processes,
        model_copies=model_copies,
        table=table,
    )
    config = StreamConfig(
        embed=embed,
        subscription=subscription,
        topic=topic,
        database=connection if connection is not None else database_uri,
        table=table,
        window_seconds=window_seconds,
        allowed_lateness_seconds=allowed_lateness_seconds,
        write_shards=write_shards,
        dead_letter_topic=dead_letter_topic,
    )
    if check_model:
        try:
            encoder = load_encoder(model, batch_size=1, output_dimensionality=output_dimensionality, device="cpu",
                                   precision="fp32", backend=backend)
            config.dimension = int(encoder.embed(["embedpipe model check"]).shape[1])
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the model's files make the loader raise
            raise ModelLoadError(f"could not load model {model!r}: {type(err).__name__}: {err}") from err
    if prepare_table and config.dimension:
        prepare_vector_table(config)
    return config


def prepare_vector_table(config: StreamConfig) -> None:
    """Creates the table and its index if missing, or checks an existing table's dimension (before any worker writes)."""
    from embedpipe.vectorstore import PgVectorWriter

    writer = PgVectorWriter(config.database, config.table)

    def work(session):
        kind, _ = writer.ensure_table(session, config.dimension)
        writer.ensure_index(session, kind, 0)

    writer.run_transaction(work)


@dataclass
class StreamResult:
    """How a streaming run ended (local runs, or a finite test stream) or that it was submitted (Dataflow).

    Attributes:
        state: The runner's state ("DONE" locally; "RUNNING" for a submitted Dataflow job).
        metrics: STREAM_METRIC_NAMES counts (empty for a submitted job: see its Dataflow page).
        job_id: The Dataflow job id ("" locally).
    """

    state: str
    metrics: dict[str, int] = field(default_factory=dict)
    job_id: str = ""

    def summary(self) -> str:
        if self.job_id and not self.metrics:
            return f"Dataflow streaming job {self.job_id} is {self.state}; counters are on its Dataflow page (namespace {NAMESPACE})"
        return ", ".join(f"{name} {self.metrics.get(name, 0):,}" for name in STREAM_METRIC_NAMES)


def stream_metrics(result) -> dict[str, int]:
    """The streaming job's counters (committed values where the runner has them)."""
    from apache_beam.metrics.metric import MetricsFilter

    values = {name: 0 for name in STREAM_METRIC_NAMES}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        if name in values:
            committed = getattr(counter, "committed", None)
            values[name] += int(committed if committed is not None else counter.attempted or 0)
    return values


def local_stream_runner():
    """Beam's Python direct runner: it runs streaming pipelines (TestStream, Pub/Sub) in this process.

    Beam 2.77's `DirectRunner` would try the Prism runner first, which downloads a binary; the
    FnApiRunner that the batch job uses locally does not run streaming pipelines.
    """
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    return BundleBasedDirectRunner()


@contextlib.contextmanager
def _count_every_bundle():
    """Works around a Beam 2.77 direct-runner bug that loses counters, for the length of a local run.

    The BundleBasedDirectRunner gives each bundle a new MetricsContainer, but its per-thread
    `StateSampler.scoped_state` caches the state of a step by name, with the container of the step's
    first bundle on that thread: increments of later bundles land in a container that was already
    reported, and the job's counts come out short. Here a step whose cached state holds another
    container gets a new state. Runners that build their own samplers per bundle are unaffected.
    """
    from apache_beam.runners.worker import statesampler

    original = statesampler.StateSampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is not None and state.metrics_container is not metrics_container:
            for name in [name for name, cached in self._states_by_name.items() if cached is state]:
                del self._states_by_name[name]
            state = original(self, name_context, state_name, io_target, metrics_container)
        return state

    statesampler.StateSampler.scoped_state = scoped_state
    try:
        yield
    finally:
        statesampler.StateSampler.scoped_state = original


def run_stream(config: StreamConfig, beam_args: Sequence[str] = (), *, source=None, runner=None, wait: bool | None = None) -> StreamResult:
    """Builds the streaming pipeline and runs it (with `streaming=True`).

    Args:
        config: From `prepare_stream_config`.
        beam_args: Beam pipeline options (`stream_dataflow_args(...)` for Dataflow); default the local runner.
        source: Replaces `ReadFromPubSub` (tests pass a `TestStream`).
        runner: A PipelineRunner instance to use instead of the one `--runner` names.
        wait: Wait for the job to end (default: locally yes; a Dataflow streaming job runs until drained,
            so no: its id is returned once submitted).

    Raises:
        ModelLoadError: when the model cannot be loaded on a worker.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

    from embedpipe.embed.job import _model_load_error

    options = PipelineOptions(list(beam_args))
    options.view_as(StandardOptions).streaming = True
    options.view_as(SetupOptions).save_main_session = False
    local = options.view_as(StandardOptions).runner in (None, "DirectRunner", "direct", "BundleBasedDirectRunner")
    if runner is None and local:
        runner = local_stream_runner()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_stream_pipeline(pipeline, config, source=source)
    counting = _count_every_bundle() if local else contextlib.nullcontext()
    try:
        with counting:
            result = pipeline.run()
            job_id = result.job_id() if hasattr(result, "job_id") and not local else ""
            if job_id:
                log.info("Dataflow streaming job %s submitted", job_id)
            if wait is None:
                wait = not job_id
            if not wait:
                return StreamResult(state=str(result.state), job_id=job_id)
            state = result.wait_until_finish()
    except Exception as err:  # noqa: BLE001 - re-raised with the model error made readable
        load_error = _model_load_error(err)
        if load_error is not None:
            raise load_error from err
        raise
    return StreamResult(state=str(state or result.state), metrics=stream_metrics(result), job_id=job_id)


def stream_dataflow_args(*, project: str, region: str, temp_location: str, job_name: str = "", **worker) -> list[str]:
    """Beam options for Dataflow streaming: `embedpipe.embed.dataflow.dataflow_args` plus `--streaming`.

    Args:
        project, region, temp_location, job_name: As for `dataflow_args` (job name default `embed-stream-<UTC time>`;
            keep one name to `--update` a running job).
        **worker: The other `dataflow_args` arguments (image, machine type, GPUs, network, ...).
    """
    import time

    from embedpipe.embed.dataflow import dataflow_args

    job_name = job_name or "embed-stream-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return dataflow_args(project=project, region=region, temp_location=temp_location, job_name=job_name, **worker) + ["--streaming"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedpipe.embed.streaming", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("source and target")
    source.add_argument("--subscription", default="", help="Pub/Sub subscription projects/P/subscriptions/S")
    source.add_argument("--topic", default="", help="Pub/Sub topic projects/P/topics/T (instead of a subscription)")
    source.add_argument("--dead-letter-topic", default="", help="also publish dead letters (JSON with the reason) to this topic")
    source.add_argument("--database-uri", default="", help="Postgres/pgvector URI of the vector database (AlloyDB/Cloud SQL: its private IP)")
    source.add_argument("--table", default="embeddings", help="pgvector table (default: %(default)s)")
    source.add_argument("--skip-table-check", action="store_true", help="do not create/check the table from this machine (it cannot reach the database)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="default", help="model folder, gs:// folder, hub id or 'default' (default: %(default)s)")
    model.add_argument("--skip-model-check", action="store_true", help="do not load the model on this machine before submitting")
    model.add_argument("--task-type", default="RETRIEVAL_DOCUMENT", help="selects the document prompt (default: %(default)s)")
    model.add_argument("--chunk-tokens", type=int, default=0, help="split documents into chunks of this many tokens (0 = no chunking)")
    model.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by neighbouring chunks (default: %(default)s)")
    model.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)")
    model.add_argument("--output-dimensionality", type=int, default=0, help="keep this many leading dimensions, re-normalised (0 = all)")
    model.add_argument("--device", default="", help="cpu, cuda, ... (default: cuda when there is one)")
    model.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto = bf16 on GPU (default: %(default)s)")
    window = parser.add_argument_group("micro-batches")
    window.add_argument("--window-seconds", type=float, default=5.0, help="fixed window (publish time) per write (default: %(default)s)")
    window.add_argument("--allowed-lateness-seconds", type=int, default=3600, help="late messages are still written this long after their window (default: %(default)s)")
    window.add_argument("--write-shards", type=int, default=4, help="database writers per window (default: %(default)s)")
    cloud = parser.add_argument_group("runner (other flags are passed to Beam)")
    cloud.add_argument("--runner", default="DirectRunner", choices=["DirectRunner", "DataflowRunner"], help="(default: %(default)s)")
    cloud.add_argument("--project", default="", help="Dataflow: Google Cloud project")
    cloud.add_argument("--region", default="us-central1", help="Dataflow: region (default: %(default)s)")
    cloud.add_argument("--temp-location", "--temp_location", default="", help="Dataflow: gs:// folder for temporary files")
    cloud.add_argument("--job-name", "--job_name", default="", help="Dataflow: job name (default: embed-stream-<UTC time>)")
    cloud.add_argument("--sdk-container-image", "--sdk_container_image", default="", help="Dataflow: worker image (default: this version's embedpipe-dataflow)")
    cloud.add_argument("--machine-type", "--machine_type", default="", help="Dataflow: worker machine type")
    cloud.add_argument("--max-workers", "--max_num_workers", type=int, default=0, help="Dataflow: autoscaling bound")
    cloud.add_argument("--accelerator-type", default="", help="Dataflow: GPU per worker, e.g. nvidia-l4 ('' = CPU workers)")
    cloud.add_argument("--accelerator-count", type=int, default=1, help="Dataflow: GPUs per worker (default: %(default)s)")
    cloud.add_argument("--service-account", default="", help="Dataflow: worker service account e-mail")
    cloud.add_argument("--network", default="", help="Dataflow: VPC network")
    cloud.add_argument("--subnetwork", default="", help="Dataflow: subnetwork URL (regions/R/subnetworks/S)")
    cloud.add_argument("--streaming", action="store_true", help="accepted for Beam's spelling; this job always streams")
    return parser


def config_and_args_from_argv(argv: Sequence[str] | None = None) -> tuple[StreamConfig, list[str]]:
    """Parses the command line into a checked StreamConfig and the Beam options to run it with."""
    args, extra = _parser().parse_known_args(argv)
    remote = args.runner == "DataflowRunner"
    gpu = remote and bool(args.accelerator_type)
    config = prepare_stream_config(
        args.subscription,
        args.topic,
        database_uri=args.database_uri,
        table=args.table,
        model=args.model,
        task_type=args.task_type,
        chunk_tokens=args.chunk_tokens,
        chunk_overlap=args.chunk_overlap,
        batch_size=args.batch_size,
        output_dimensionality=args.output_dimensionality,
        device=args.device,
        precision=args.precision,
        share_across_processes=gpu,
        model_copies=max(args.accelerator_count, 1) if gpu else 1,
        window_seconds=args.window_seconds,
        allowed_lateness_seconds=args.allowed_lateness_seconds,
        write_shards=args.write_shards,
        dead_letter_topic=args.dead_letter_topic,
        check_model=not args.skip_model_check,
        prepare_table=not args.skip_table_check,
    )
    if not remote:
        return config, list(extra)
    beam_args = stream_dataflow_args(
        project=args.project,
        region=args.region,
        temp_location=args.temp_location,
        job_name=args.job_name,
        sdk_container_image=args.sdk_container_image,
        service_account=args.service_account,
        network=args.network,
        subnetwork=args.subnetwork,
        machine_type=args.machine_type,
        max_workers=args.max_workers,
        accelerator_type=args.accelerator_type,
        accelerator_count=args.accelerator_count,
    )
    return config, beam_args + list(extra)


def main(argv: Sequence[str] | None = None) -> int:
    from embedpipe.models import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config, beam_args = config_and_args_from_argv(argv)
        result = run_stream(config, beam_args)
    except (ModelLoadError, ValueError) as err:
        print(f"embed stream: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


__all__ = [
    "STREAM_METRIC_NAMES",
    "StreamConfig",
    "StreamOutputs",
    "StreamResult",
    "apply_changes",
    "build_stream_pipeline",
    "delete_documents",
    "main",
    "parse_message",
    "plan_writes",
    "prepare_stream_config",
    "run_stream",
    "stream_dataflow_args",
]

if __name__ == "__main__":
    sys.exit(main())
