"""Readers for BEIR-style inputs, the formats Vertex AI's embedding tuning pipeline takes.

- `corpus.jsonl`: one JSON object per line with `_id` and `text` (required) and `title` (optional).
- `queries.jsonl`: one JSON object per line with `_id` and `text`.
- labels (qrels) TSV: `query-id<TAB>corpus-id<TAB>score`, header optional, score a non-negative integer
  (missing score = 1; 0 = not relevant).

Files are UTF-8 (a byte-order mark and CRLF line endings are accepted). The readers never raise on bad
records: they add a `Problem` naming file, line and field to a `ProblemCollector`, skip the record and go
on, so one run reports every problem.

Only what the outputs can store is accepted (`embedpipe.storable`): no NaN or Infinity, no over-long
numbers, no NUL characters or lone surrogates in the fields kept, no deep nesting, scores within 64-bit
integers. Ids are matched exactly, so an id with surrounding whitespace is an error in every file (a
corpus id `" d1"` would never match the label `d1`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from embedpipe.storable import INT64_MAX, LineError, Unstorable, find_unstorable, loads_line, short, string_problem
from embedpipe.validation import ProblemCollector

_BOM = b"\xef\xbb\xbf"
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_WHITESPACE_HINT = "ids are matched exactly; remove the whitespace here (and name the id without it in the labels)"
LABEL_COLUMNS = ("query-id", "corpus-id", "score")


def iter_text_lines(data: bytes, file: str, problems: ProblemCollector) -> Iterator[tuple[int, str]]:
    """Yields (line number, text) for each non-blank line of a UTF-8 file.

    Lines that are not valid UTF-8 are reported and skipped.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 1].hex()
            problems.add(
                file,
                number,
                None,
                f"not valid UTF-8 (byte 0x{bad} at byte {err.start + 1} of the line); save the file as UTF-8",
            )
            continue
        if text.strip():
            yield number, text


@dataclass
class Records:
    """Records read from a JSONL file, with the line each came from."""

    rows: list[dict] = field(default_factory=list)
    line_of: dict[str, int] = field(default_factory=dict)


def _string_field(value, file, number, name, problems, *, required: bool) -> str | None:
    if value is None:
        if required:
            problems.add(file, number, name, f"missing; every record needs a non-empty string '{name}'")
            return None
        return ""
    if isinstance(value, Unstorable):
        problems.add(file, number, name, value.reason)
        return None
    if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # BEIR files written by some tools carry numeric ids
    if not isinstance(value, str):
        shown = json.dumps(value, default=lambda item: getattr(item, "literal", "?"))[:40]
        problems.add(file, number, name, f"must be a string, got {type(value).__name__} {shown}")
        return None
    if required and not value.strip():
        problems.add(file, number, name, f"is empty; give a non-empty string '{name}'")
        return None
    problem = string_problem(value)
    if problem:
        problems.add(file, number, name, problem)
        return None
    if name == "_id" and value != value.strip():
        problems.add(file, number, name, f"{short(value)} has surrounding whitespace; {_WHITESPACE_HINT}")
        return None
    return value


def _metadata(value, file, number, problems) -> dict | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(file, number, "metadata", f"must be a JSON object, got {type(value).__name__}")
        return None
    found = find_unstorable(value, "metadata")
    first = next(found, None)
    if first is None:
        return value
    more = sum(1 for _ in found)
    path, message = first
    others = f" (and {more:,} more such value{'s' * (more > 1)} in 'metadata')" if more else ""
    problems.add(file, number, path, message + others)
    return None


def read_jsonl(data: bytes, file: str, problems: ProblemCollector, *, with_title: bool) -> Records:
    """Reads a BEIR corpus (`with_title=True`) or queries file.

    Returns the valid records as dicts with `_id`, `text`, `metadata` (JSON text) and, for a corpus,
    `title` ("" when absent).
    """
    records = Records()
    problems_before = problems.total
    for number, text in iter_text_lines(data, file, problems):
        try:
            obj = loads_line(text)
        except LineError as err:
            problems.add(file, number, None, f"{err}; each line must be one JSON object")
            continue
        if not isinstance(obj, dict):
            problems.add(
                file,
                number,
                None,
                f'expected a JSON object like {{"_id": "...", "text": "..."}}, got a {type(obj).__name__}',
            )
            continue
        doc_id = _string_field(obj.get("_id"), file, number, "_id", problems, required=True)
        body = _string_field(obj.get("text"), file, number, "text", problems, required=True)
        title = _string_field(obj.get("title"), file, number, "title", problems, required=False) if with_title else ""
        metadata = _metadata(obj.get("metadata"), file, number, problems)
        if doc_id is None or body is None or title is None or metadata is None:
            continue
        if doc_id in records.line_of:
            problems.add(
                file,
                number,
                "_id",
                f"duplicate id {short(doc_id)}, first seen on line {records.line_of[doc_id]}; ids must be unique",
            )
            continue
        records.line_of[doc_id] = number
        row = {"_id": doc_id, "text": body, "metadata": json.dumps(metadata, ensure_ascii=False, sort_keys=True)}
        if with_title:
            row["title"] = title
        records.rows.append(row)
    if not records.rows and problems.total == problems_before:
        problems.add(file, None, None, "has no records; expected one JSON object per line")
    return records


@dataclass(frozen=True)
class Label:
    query_id: str
    corpus_id: str
    score: int
    line: int


def read_labels(
    data: bytes,
    file: str,
    problems: ProblemCollector,
    *,
    query_ids: dict[str, int],
    corpus_ids: dict[str, int],
    queries_file: str,
    corpus_file: str,
) -> list[Label]:
    """Reads a labels TSV, checking every id against the queries and corpus already read."""
    labels: list[Label] = []
    problems_before = problems.total
    seen: dict[tuple[str, str], int] = {}
    first = True
    for number, text in iter_text_lines(data, file, problems):
        cells = text.split("\t")
        if first:
            first = False
            if [c.strip().lower() for c in cells[:2]] == ["query-id", "corpus-id"]:
                continue  # header
        if len(cells) not in (2, 3):
            hint = " (is the file tab-separated?)" if len(cells) == 1 and (" " in text or "," in text) else ""
            problems.add(
                file,
                number,
                None,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), found {len(cells)}{hint}",
            )
            continue
        query_id, corpus_id = cells[0], cells[1]
        ok = True
        for name, value in (("query-id", query_id), ("corpus-id", corpus_id)):
            problem = _label_id_problem(value)
            if problem:
                problems.add(file, number, name, problem)
                ok = False
        score = _score(cells[2].strip(), file, number, problems) if len(cells) == 3 else 1
        if score is None:
            ok = False
        if not ok:
            continue
        if query_id not in query_ids:
            problems.add(file, number, "query-id", f"unknown query id {short(query_id)}: not in {queries_file}")
            ok = False
        if corpus_id not in corpus_ids:
            problems.add(file, number, "corpus-id", f"unknown corpus id {short(corpus_id)}: not in {corpus_file}")
            ok = False
        if not ok:
            continue
        key = (query_id, corpus_id)
        if key in seen:
            problems.add(
                file,
                number,
                "corpus-id",
                f"duplicate label for query {short(query_id)} and document {short(corpus_id)}, first on line {seen[key]}",
            )
            continue
        seen[key] = number
        labels.append(Label(query_id, corpus_id, score, number))
    if not labels and problems.total == problems_before:
        problems.add(file, None, None, "has no labels; expected lines of query-id<TAB>corpus-id<TAB>score")
    return labels


def _label_id_problem(value: str) -> str | None:
    if not value.strip():
        return "is empty; give the id of a record"
    problem = string_problem(value)
    if problem:
        return problem
    if value != value.strip():
        return f"{short(value)} has surrounding whitespace; {_WHITESPACE_HINT}"
    return None


def _score(raw: str, file: str, number: int, problems: ProblemCollector) -> int | None:
    """The score of a label, or None after adding the problem (checked before `int`, which refuses 4,300+ digits)."""
    rule = "scores are non-negative integers (0 = not relevant)"
    shown = raw if len(raw) <= 30 else f"{raw[:20]}... ({len(raw):,} characters)"
    if not _INTEGER.match(raw):
        problems.add(file, number, "score", f"{short(raw)} is not an integer; {rule}")
        return None
    digits = raw.lstrip("+-").lstrip("0")
    if raw.startswith("-") and digits:
        problems.add(file, number, "score", f"negative score {shown}; {rule}")
        return None
    if len(digits) > len(str(INT64_MAX)) or int(digits or "0") > INT64_MAX:
        problems.add(file, number, "score", f"score {shown} is larger than a 64-bit integer ({INT64_MAX:,}); {rule}")
        return None
    return int(raw)
