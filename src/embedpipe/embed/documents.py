"""Documents of the embedding job: parsing corpus records, content hashes, token chunking.

Plain functions, no Beam: the job's DoFns call them, and so can a test or a notebook.

A parsed record is a `Document` (`embedpipe.embed.types`). A record that cannot be embedded becomes a
`DeadLetter` (id, reason, excerpt), which the job writes out and counts; nothing is dropped silently.

Example:
    >>> doc = parse_record({"_id": 7, "title": "T", "text": "Some text."})
    >>> doc.id, doc.metadata
    ('7', {})
    >>> parse_record({"_id": "d1", "text": "  "}).reason
    "field 'text' is empty; every document needs text to embed"
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from embedpipe.embed.types import DeadLetter, Document, VectorRow

#: Separator of a chunk id: `docid#0`, `docid#1`, ...
CHUNK_SEPARATOR = "#"
_EXCERPT = 200


def dead_letter(doc_id: str | None, reason: str, record: Any, source: str = "") -> DeadLetter:
    """A record the job could not embed, with why (the record itself cut to a short excerpt)."""
    if isinstance(record, (Document, DeadLetter)):
        record = record.to_dict()
    excerpt = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str)
    return DeadLetter(doc_id, reason, excerpt[:_EXCERPT], source)


def is_dead_letter(item: object) -> bool:
    return isinstance(item, DeadLetter)


def parse_json_line(line: str | bytes, source: str = "") -> Document | DeadLetter:
    """Parses one JSONL corpus line into a document or a dead letter.

    Args:
        line: The line, as text or as the bytes read (decoded as UTF-8; a line that is not UTF-8 is a dead
            letter, never decoded with replacement characters).
        source: Where it was read, `file:line`: named in a dead letter.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as err:
            where = f"{source}: " if source else ""
            reason = (
                f"{where}not valid UTF-8 ({err.reason}: byte 0x{line[err.start]:02x} at byte {err.start + 1} of the "
                "line); save the corpus as UTF-8"
            )
            return dead_letter(None, reason, line.decode("utf-8", errors="backslashreplace"), source)
    letter = _parse_json_text(line.lstrip("\ufeff"))
    return replace(letter, source=source) if source and is_dead_letter(letter) else letter


def _parse_json_text(line: str) -> Document | DeadLetter:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return dead_letter(
            None, f"invalid JSON: {err.msg} at column {err.colno}; each line must be one JSON object", line
        )
    if not isinstance(obj, dict):
        return dead_letter(
            None, f'expected a JSON object like {{"_id": "...", "text": "..."}}, got a {type(obj).__name__}', line
        )
    return parse_record(obj)


def parse_record(record: dict) -> Document | DeadLetter:
    """Checks one corpus record (a JSONL object or a Parquet row) and returns a document or a dead letter.

    Args:
        record: `_id` (or `id`), `text`, optional `title`, optional `metadata` (an object, or JSON text as
            prepare_data writes it).
    """
    doc_id = record.get("_id", record.get("id"))
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id.strip():
        return dead_letter(
            None, "field '_id' is missing or not a non-empty string; every document needs an id", record
        )
    text = record.get("text")
    if not isinstance(text, str):
        what = "missing" if text is None else f"a {type(text).__name__}, not a string"
        return dead_letter(doc_id, f"field 'text' is {what}; every document needs text to embed", record)
    if not text.strip():
        return dead_letter(doc_id, "field 'text' is empty; every document needs text to embed", record)
    title = record.get("title") or ""
    if not isinstance(title, str):
        return dead_letter(doc_id, f"field 'title' must be a string, got {type(title).__name__}", record)
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError:
            return dead_letter(doc_id, "field 'metadata' is not valid JSON text", record)
    if not isinstance(metadata, dict):
        return dead_letter(doc_id, f"field 'metadata' must be a JSON object, got {type(metadata).__name__}", record)
    return Document(id=doc_id, text=text, title=title, metadata=metadata)


def content_hash(formatted_text: str, model_identity: str, chunking: str = "") -> str:
    """Hash of what decides a document's vectors: its formatted text, the model, and the chunking.

    Two runs that give a document the same hash give it the same vectors, so an incremental run
    carries the previous vectors over instead of embedding it again.
    """
    digest = hashlib.sha256()
    for part in (model_identity, chunking, formatted_text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def chunk_spans(offsets: Sequence[tuple[int, int]], chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of overlapping token windows.

    Args:
        offsets: (start, end) character offsets of each token of the text (no special tokens).
        chunk_tokens: Tokens per chunk.
        overlap: Tokens each chunk shares with the one before it (< chunk_tokens).

    Returns:
        (start, end) character spans, one per chunk; one span covering everything for a short text.

    Example:
        >>> chunk_spans([(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)], chunk_tokens=3, overlap=1)
        [(0, 5), (4, 9)]
    """
    check_chunking(chunk_tokens, overlap)
    if not offsets:
        return []
    step = chunk_tokens - overlap
    spans = []
    start = 0
    while True:
        end = min(start + chunk_tokens, len(offsets))
        spans.append((offsets[start][0], offsets[end - 1][1]))
        if end >= len(offsets):
            return spans
        start += step


def check_chunking(chunk_tokens: int, overlap: int) -> None:
    """Raises ValueError saying what is wrong with chunking parameters (chunk_tokens 0 = no chunking)."""
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be 0 (no chunking) or a positive number of tokens, got {chunk_tokens}")
    if overlap < 0:
        raise ValueError(f"chunk_overlap must be 0 or more tokens, got {overlap}")
    if chunk_tokens and overlap >= chunk_tokens:
        raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_tokens ({chunk_tokens})")
    if not chunk_tokens and overlap:
        raise ValueError("chunk_overlap needs chunk_tokens > 0 (chunking is off)")


def chunk_id(doc_id: str, index: int) -> str:
    return f"{doc_id}{CHUNK_SEPARATOR}{index}"


def document_id_of(row: VectorRow) -> str:
    """The document a vector row belongs to: `metadata.document_id` for chunks, else the row id."""
    metadata = row.metadata or "{}"
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            metadata = {}
    return str(metadata.get("document_id") or row.id)


def document_metadata(doc: Document, **extra) -> str:
    """JSON text of a vector row's metadata: the document's, its title, and `extra` (chunk, document_id)."""
    metadata = dict(doc.metadata)
    if doc.title:
        metadata.setdefault("title", doc.title)
    metadata.update(extra)
    return json.dumps(metadata, ensure_ascii=False, sort_keys=True)
