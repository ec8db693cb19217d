"""Pub/Sub messages of the streaming job: parsed into changes, and the newest change of a document kept.

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
on-time rows in one write, the newest wins there (`embedpipe.embed.streaming.planning`).
"""

from __future__ import annotations

import json
from datetime import datetime

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed import documents as docs
from embedpipe.embed.pipeline import EmbedConfig
from embedpipe.embed.runtime import counter
from embedpipe.embed.types import Change, DeadLetter, Document, Version


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


def parse_message(data: bytes | str, publish_time_micros: int = 0) -> Change | DeadLetter:
    """One Pub/Sub message body -> a `Change` or a `DeadLetter`.

    A change's `document` is the parsed document (None for a delete), and its `order` sorts the versions
    of one document, the newest last (see the module docstring).

    Example:
        >>> parse_message(b'{"id": "d1", "delete": true}', 5).order
        (False, 0, False, 0.0, 5, 1, '')
        >>> parse_message(b'{"id": "d1"}').reason
        "field 'text' is missing; every document needs text to embed"
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return docs.dead_letter(
            None, f"invalid JSON: {err.msg} at column {err.colno}; each message must be one JSON object", text
        )
    if not isinstance(record, dict):
        return docs.dead_letter(
            None, f'expected a JSON object like {{"id": "...", "text": "..."}}, got a {type(record).__name__}', text
        )
    doc = docs.parse_record(record)
    doc_id = doc.id  # None only when the id itself is missing or bad
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
        sequence is not None,
        sequence or 0,
        updated_at is not None,
        updated_at or 0.0,
        int(publish_time_micros),
        int(delete),
        "" if doc is None else doc.title + "\0" + doc.text,  # identical times: any fixed choice
    )
    return Change(doc_id, delete, doc, order)


class ParseMessages(beam.DoFn):
    """Pub/Sub message (bytes, or a PubsubMessage) -> `(id, change)`; bad messages to the `dead` output."""

    def __init__(self):
        self._read = counter("messages_read")
        self._dead = counter("dead_letters")

    def process(self, message, timestamp=beam.DoFn.TimestampParam):
        self._read.inc()
        change = parse_message(getattr(message, "data", message), timestamp.micros)
        if docs.is_dead_letter(change):
            self._dead.inc()
            yield beam.pvalue.TaggedOutput("dead", change)
            return
        yield change.id, change


def document_hash(doc: Document, config: EmbedConfig) -> str:
    """The content hash the batch job's `Decide` gives this document (and its rows carry)."""
    formatted = config.prompts.format_documents([doc.text], [doc.title])[0]
    return docs.content_hash(formatted, config.model_identity, config.chunking)


class LatestWins(beam.DoFn):
    """Per document and window: the newest change wins.

    Outputs `(id, Document)` to embed for an upsert, and on `versions` one `Version` per winner (its
    content hash None for a delete) that travels to the write beside the rows.
    """

    def __init__(self, config: EmbedConfig):
        self._config = config
        self._superseded = counter("messages_superseded")

    def process(self, element):
        doc_id, changes = element
        changes = sorted(changes, key=lambda c: c.order)
        if len(changes) > 1:
            self._superseded.inc(len(changes) - 1)
        newest = changes[-1]
        digest = None if newest.delete else document_hash(newest.document, self._config)
        yield beam.pvalue.TaggedOutput("versions", Version(doc_id, newest.order, digest))
        if not newest.delete:
            yield doc_id, newest.document


__all__ = ["LatestWins", "ParseMessages", "document_hash", "parse_message"]
