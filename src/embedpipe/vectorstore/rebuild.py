"""Large upserts: build the vector index again in bulk instead of inserting rows into it one by one.

Inserting a row into an HNSW graph costs many times what the same row costs in a bulk build, so an
upsert that adds or changes a large part of the table (`IndexSettings.rebuild_fraction`) drops the
vector indexes and builds them again from their own definitions, in the same transaction (all or
nothing; searches wait for the commit). In a `snapshot` write (`snapshot`) the rows it deletes count
too: a graph left full of deleted rows answers with fewer than k hits until a vacuum.

How the rows get in matters as much. An `UPDATE` leaves the old row versions in the heap, deleted by
this very transaction, and `CREATE INDEX` must index those as well (another snapshot may still see
them): rebuilding after an update of every row builds a graph of twice the rows. So where it is safe,
the table is rewritten instead: the rows this upsert keeps are added to the staging table, the table is
emptied with `TRUNCATE` (transactional: a killed or failed upsert leaves the old rows and index as they
were) and refilled, and the index built over live rows only, as for a fresh load. A snapshot keeps no
row the staging table does not hold: the refill is its delete.
Safe means: the writer owns the table, whose columns are embedpipe's four only
(and the generated full-text column, `fulltext`), with no foreign key
pointing at it and no triggers of its own. Otherwise the update runs and the index is rebuilt after it.

Figures: benchmarks/README.md (upsert_recovery).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore import schema
from embedpipe.vectorstore.identifiers import table_identifier
from embedpipe.vectorstore.schema import IndexSettings
from embedpipe.vectorstore.sessions import Session
from embedpipe.vectorstore.snapshot import count_missing
from embedpipe.vectorstore.transactions import advisory_lock, table_lock_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rebuild:
    """What a large upsert does instead of inserting into the index.

    Attributes:
        indexes: (schema, name, definition) of the vector indexes dropped and built again.
        rewrite: Whether the table is emptied and refilled (else updated in place).
        inserted: Rows of the upsert whose id is new.
        updated: Rows of the upsert whose id exists with other values.
        deleted: Rows a snapshot deletes (not in the upsert); 0 for an append.
    """

    indexes: list[tuple]
    rewrite: bool
    inserted: int
    updated: int
    deleted: int = 0


def plan_rebuild(
    session: Session, table: str, staging: sql.Identifier, settings: IndexSettings, rows: int, *, snapshot=False
) -> Rebuild | None:
    """A Rebuild if the upsert of the `rows` in `staging` adds or changes enough of `table` (or, for a
    `snapshot`, adds, changes or deletes enough), else None.

    Takes the table's exclusive advisory lock when it decides to rebuild (no other writer meets the
    table without its index).
    """
    fraction = settings.rebuild_fraction
    if not fraction:
        return None
    table_rows = schema.estimated_rows(session, table)
    most = rows + (table_rows if snapshot else 0)  # a snapshot may delete every row it does not name
    if most < max(schema.REBUILD_MIN_ROWS, fraction * table_rows):
        return None
    inserted, updated = session.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE t.id IS NULL), count(*) FILTER (WHERE t.id IS NOT NULL AND"
            " (t.embedding, t.content, t.metadata) IS DISTINCT FROM (s.embedding, s.content, s.metadata))"
            " FROM {staging} s LEFT JOIN {target} t ON t.id = s.id"
        ).format(staging=staging, target=table_identifier(table))
    )[0]
    deleted = count_missing(session, table, staging) if snapshot else 0
    if inserted + updated + deleted < max(schema.REBUILD_MIN_ROWS, fraction * table_rows):
        return None
    if not schema.vector_indexes(session, table):
        return None
    advisory_lock(session, table_lock_key(session, table))
    indexes = schema.vector_indexes(session, table)  # as they are now that no other writer is at work
    rewrite = can_rewrite(session, table)
    log.info(
        "%d of %d rows added, changed or deleted in %s: building %s again in bulk (%s)",
        inserted + updated + deleted,
        table_rows,
        table,
        ", ".join(name for _, name, _ in indexes),
        "table rewritten" if rewrite else "rows updated in place",
    )
    return Rebuild(indexes, rewrite, int(inserted), int(updated), deleted)


def can_rewrite(session: Session, table: str) -> bool:
    """Whether emptying and refilling the table loses nothing (see the module's docstring)."""
    rows = session.execute(
        "SELECT pg_has_role(c.relowner, 'USAGE')"
        " AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
        "  AND NOT a.attisdropped AND a.attname NOT IN ('id', 'embedding', 'content', 'metadata', 'content_tsv'))"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = c.oid)"
        " AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal)"
        " FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (session.render(table_identifier(table)),),
    )
    return bool(rows and rows[0][0])


def rewrite_table(session: Session, table: str, staging: sql.Identifier, *, keep_missing: bool = True) -> int:
    """Empties the table and fills it with the staging rows plus, when `keep_missing` (an append), the rows
    the upsert does not touch; a snapshot (`keep_missing=False`) leaves those out.

    The caller has dropped the vector indexes (holding the table's exclusive advisory lock) and builds
    them again afterwards.

    Returns:
        The rows deleted: those the staging table does not hold for a snapshot, 0 for an append.
    """
    target = table_identifier(table)
    # before reading the rows to keep: a delete that has not committed yet (deletes take no advisory
    # lock) would otherwise come back to life in the refill
    session.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(target))
    deleted = 0
    if keep_missing:
        session.execute(
            sql.SQL(
                "INSERT INTO {staging} (id, embedding, content, metadata) SELECT t.id, t.embedding, t.content,"
                " t.metadata FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.id = t.id)"
            ).format(staging=staging, target=target)
        )
    else:
        deleted = count_missing(session, table, staging)
    session.execute(sql.SQL("TRUNCATE {}").format(target))
    session.execute(
        sql.SQL(
            "INSERT INTO {target} (id, embedding, content, metadata)"
            " SELECT id, embedding, content, metadata FROM {staging}"
        ).format(staging=staging, target=target)
    )
    return deleted
