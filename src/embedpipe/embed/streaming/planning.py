"""Planning one database write of the streaming job: which rows to upsert, which documents to delete.

Plain functions, no Beam and no database: the rows and version records of one window and shard come in
(`WriteChanges` in `embedpipe.embed.streaming.writes` applies the plan), so the rules for a late message
that meets its window's on-time rows can be tested on their own.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from datetime import UTC
from typing import NamedTuple

from embedpipe.embed.types import VectorRow, Version


def shard_of(doc_id: str, shards: int) -> int:
    """A stable shard (the same in every worker process, unlike `hash`) for a document id."""
    return zlib.crc32(doc_id.encode("utf-8")) % max(shards, 1)


def document_of(row: VectorRow, chunked: bool) -> str:
    """The document a vector row belongs to: chunk rows carry it in `metadata.document_id`."""
    return json.loads(row.metadata)["document_id"] if chunked else row.id


class WritePlan(NamedTuple):
    rows: list  # vector rows to upsert, one per id
    upserted: list  # their documents (rows of these documents not in `rows` are deleted)
    deleted: list  # documents to delete
    orders: dict  # document -> the order of the version chosen (documents whose version record is here)

    def without(self, doc_ids, chunked: bool) -> WritePlan:
        """This plan less these documents (their rows, upserts, deletes)."""
        gone = set(doc_ids)
        return WritePlan(
            [r for r in self.rows if document_of(r, chunked) not in gone],
            [d for d in self.upserted if d not in gone],
            [d for d in self.deleted if d not in gone],
            {d: o for d, o in self.orders.items() if d not in gone},
        )


def given_version(order: tuple) -> tuple[int | None, float | None]:
    """The (`sequence`, `updated_at`) a message gave, from its `Change.order` (None where it gave none)."""
    return (order[1] if order[0] else None, order[3] if order[2] else None)


def _time(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def stale_reason(given: tuple[int | None, float | None], stored) -> str:
    """Why a message's version is older than the `stored` one (`(sequence, updated_at, ...)`), or "".

    Versions are compared as they are ordered within a window: by `sequence` when both have one, then
    by `updated_at`. An equal version is not stale (a redelivered message writes the same rows again); a
    message without a version, or a document without a stored one, is never stale.

    Example:
        >>> stale_reason((3, None), (5, None))
        'stale version: sequence 3 is older than sequence 5, which the table already holds'
        >>> stale_reason((5, None), (5, None)), stale_reason((None, None), (5, None))
        ('', '')
    """
    if stored is None:
        return ""
    sequence, updated_at = given
    if sequence is not None and stored[0] is not None and sequence != stored[0]:
        if sequence < stored[0]:
            return (
                f"stale version: sequence {sequence} is older than sequence {stored[0]}, which the table already holds"
            )
        return ""
    if updated_at is not None and stored[1] is not None and updated_at < stored[1]:
        return (
            f"stale version: updated_at {_time(updated_at)} is older than {_time(stored[1])}, which the table "
            "already holds"
        )
    return ""


def plan_writes(ops, chunked: bool) -> WritePlan:
    """Decides one write from the rows and version records that met in it.

    Normally each document has one version record and its rows. A late message can bring a second
    version of a document into the same write: the newest version that is complete here (a delete, or
    an upsert whose rows, matched by content hash, are here) wins. Rows whose version record was in an
    earlier write are written as they are.

    Args:
        ops: `("row", VectorRow)` and `("version", Version)` pairs.
        chunked: Whether the rows are chunks (`docid#n`).
    """
    versions, rows = defaultdict(list), defaultdict(list)
    for kind, item in ops:
        if kind == "row":
            rows[document_of(item, chunked)].append(item)
        else:
            versions[item.id].append(item)
    plan = WritePlan([], [], [], {})
    for doc_id in sorted(set(versions) | set(rows)):
        candidates = []
        version: Version
        for version in versions.get(doc_id, ()):
            if version.content_hash is None:
                candidates.append((tuple(version.order), None))
            else:
                matched = [r for r in rows.get(doc_id, ()) if r.content_hash == version.content_hash]
                if matched:
                    candidates.append((tuple(version.order), matched))
        if candidates:
            order, chosen = max(candidates, key=lambda c: c[0])
            plan.orders[doc_id] = order
        elif rows.get(doc_id):
            chosen = rows[doc_id]
        else:
            continue  # an upsert whose rows are still being embedded: they come with a later write
        if chosen is None:
            plan.deleted.append(doc_id)
        else:
            plan.rows.extend({r.id: r for r in chosen}.values())
            plan.upserted.append(doc_id)
    return plan


__all__ = ["WritePlan", "document_of", "given_version", "plan_writes", "shard_of", "stale_reason"]
