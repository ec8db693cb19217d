"""The newest version of each document a streaming writer applied, kept beside its pgvector table.

Messages may carry a version (`sequence`, `updated_at`); one older than what was already applied is stale
and must not overwrite newer rows (Pub/Sub redelivers, and publishers retry). The rows themselves hold no
version, and a delete leaves no row, so the versions live in a side table `<table>_versions`:

    id TEXT PRIMARY KEY, sequence BIGINT, updated_at DOUBLE PRECISION (seconds since the epoch), deleted BOOLEAN

one row per document whose message carried a version (a delete's row stays as a tombstone, so a stale
upsert after it is still recognised). It is created on first use under an advisory lock, so concurrent
writers do not race on it. Deciding what is stale is the caller's (`embedpipe.embed.streaming.planning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore.identifiers import split_table_name, unique_derived_name
from embedpipe.vectorstore.transactions import advisory_lock, lock_key


class DocumentVersion(NamedTuple):
    """A document's version as its message gave it (None where the message did not say)."""

    sequence: int | None = None
    updated_at: float | None = None
    deleted: bool = False


def versions_table(table: str) -> str:
    """`[schema.]<table>_versions`: in the table's schema, its name kept within 63 bytes."""
    schema, _ = split_table_name(table)
    name = unique_derived_name(table, "versions")
    return f"{schema}.{name}" if schema else name


def _identifier(table: str) -> sql.Identifier:
    schema, name = split_table_name(versions_table(table))
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _exists(session, table: str) -> bool:
    return session.execute("SELECT to_regclass(%s) IS NOT NULL", (versions_table(table),))[0][0]


def stored_versions(writer, doc_ids: Sequence[str]) -> dict[str, DocumentVersion]:
    """The stored versions of these documents (one read transaction of `writer`, a `PgVectorWriter`)."""
    ids = sorted({str(i) for i in doc_ids})
    if not ids:
        return {}

    def work(session) -> dict[str, DocumentVersion]:
        if not _exists(session, writer.table):
            return {}
        rows = session.execute(
            sql.SQL("SELECT id, sequence, updated_at, deleted FROM {} WHERE id = ANY(%s::text[])").format(
                _identifier(writer.table)
            ),
            (ids,),
        )
        return {
            i: DocumentVersion(None if s is None else int(s), None if u is None else float(u), bool(d))
            for i, s, u, d in rows
        }

    return writer.run_transaction(work)[0]


def record_versions(writer, versions: Mapping[str, DocumentVersion]) -> None:
    """Stores these documents' versions (one transaction), creating the side table if missing."""
    if not versions:
        return
    ids = sorted(versions)

    def work(session) -> None:
        if not _exists(session, writer.table):
            advisory_lock(session, lock_key("table", versions_table(writer.table)))
            session.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY, sequence BIGINT, "
                    "updated_at DOUBLE PRECISION, deleted BOOLEAN NOT NULL DEFAULT false)"
                ).format(_identifier(writer.table))
            )
        session.execute(
            sql.SQL(
                "INSERT INTO {} (id, sequence, updated_at, deleted)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::double precision[], %s::boolean[]) ORDER BY 1"
                " ON CONFLICT (id) DO UPDATE SET sequence = EXCLUDED.sequence, updated_at = EXCLUDED.updated_at,"
                " deleted = EXCLUDED.deleted"
            ).format(_identifier(writer.table)),
            (
                ids,
                [versions[i].sequence for i in ids],
                [versions[i].updated_at for i in ids],
                [bool(versions[i].deleted) for i in ids],
            ),
        )

    writer.run_transaction(work)


__all__ = ["DocumentVersion", "record_versions", "stored_versions", "versions_table"]
