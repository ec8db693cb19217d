"""Writing vectors into PostgreSQL + pgvector: the table Beam's AlloyDB writer uses, loaded fast and safely.

One upload is one transaction, retried whole when a re-run can cure the failure (a dropped connection,
a deadlock, a serialization failure: `transactions.run_transaction`), so the table holds either all of
an upload or none of it:

1. rows are checked before connecting (`rows.validate_batch`: ids, NaN/inf and zero vectors, text
   PostgreSQL refuses, JSON);
2. a missing extension, schema or table is created under an exclusive advisory lock per object, so
   concurrent first uploads do not race in the catalog; an existing table's dimension is checked;
3. a new table is loaded with binary COPY directly; an existing one (under the table's shared advisory
   lock) through a temporary staging table (COPY) and one `INSERT ... ON CONFLICT (id) DO UPDATE` that
   skips unchanged rows and takes row locks in id order, so concurrent upserts do not deadlock;
4. a `snapshot` write (the batch is the whole truth, `snapshot`) deletes, in the same transaction and
   under the table's exclusive advisory lock, the rows whose id is not in the batch; an `append` write
   (the default) leaves them;
5. an upsert that adds, changes or deletes a large part of the table (`IndexSettings.rebuild_fraction`)
   drops the vector index and builds it again in the transaction instead of inserting row by row into it,
   rewriting the table where that is safe so the build sees live rows only (`rebuild`);
6. a missing HNSW (or IVFFlat) index is built, found in the catalog by column and access method
   (`schema`), with `maintenance_work_mem` raised for this transaction only; so are the indexes the
   search filters use (`metadata_index`: GIN on `metadata`, B-tree on declared fields).

A database error caused by a row's values is reported with that row's id (`db_errors`), never as a
driver traceback. Deletes are one transaction too: rows by id (`delete`), or documents with their chunk
rows (`delete_documents`, what the streaming job applies). Every statement that changes a pgvector
table is here or in `schema` (reads are in `search`), so the jobs that write run no SQL of their own.

Example:
    >>> from embedpipe.vectorstore import PgVectorWriter, read_parquet_vectors   # doctest: +SKIP
    >>> writer = PgVectorWriter("postgresql://...", table="embeddings")           # doctest: +SKIP
    >>> writer.write(read_parquet_vectors("vectors/")).rows                       # doctest: +SKIP
    5183
    >>> writer.write(read_parquet_vectors("vectors/"), mode="snapshot").deleted   # doctest: +SKIP
    0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.progress import Progress
from embedpipe.vectorstore import fulltext, metadata_index, schema
from embedpipe.vectorstore.db_errors import batch_error, explain, is_database_error
from embedpipe.vectorstore.identifiers import derived_name, split_table_name, table_identifier
from embedpipe.vectorstore.rebuild import plan_rebuild, rewrite_table
from embedpipe.vectorstore.rows import VectorBatch, database_rows, validate_batch
from embedpipe.vectorstore.schema import METRICS, IndexSettings, parse_column_type
from embedpipe.vectorstore.sessions import Session
from embedpipe.vectorstore.snapshot import check_write, delete_missing
from embedpipe.vectorstore.transactions import (
    advisory_lock,
    lock_key,
    run_transaction,
    stop_with_client,
    table_lock_key,
)

__all__ = ["METRICS", "IndexSettings", "PgVectorWriter", "WriteResult", "parse_column_type"]

log = logging.getLogger(__name__)


@dataclass
class WriteResult:
    """What one upload did."""

    table: str
    rows: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    created_table: bool = False
    index_built: str = ""
    attempts: int = 1
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "attempts": self.attempts,
        }


def _as_connect(connect) -> Callable[[], Any]:
    if callable(connect):
        return connect
    if isinstance(connect, str):
        from embedpipe.vectorstore.connections import ConnectionSettings

        return ConnectionSettings(uri=connect).connection_factory()
    return connect.connection_factory()  # ConnectionSettings


class PgVectorWriter:
    """Writes VectorBatches into one pgvector table; deletes rows by id, or whole documents with their chunks.

    Several writers (threads, processes, machines) may write one table at once, a new one included.

    Args:
        connect: A Postgres URI, a `ConnectionSettings`, or a function returning a new connection
            (psycopg or pg8000); called again for each retry.
        table: `table` or `schema.table`; validated (a name like `x; DROP TABLE y` is refused).
        index: The index to build if missing (IndexSettings(kind="none") for none).
        retries: Re-runs of a transaction after a dropped connection, a deadlock or a serialization failure.
        backoff: Seconds before the first retry; doubled each time.
        sleep: Waits between retries (tests pass a fake).
    """

    def __init__(
        self,
        connect,
        table: str = "embeddings",
        *,
        index: IndexSettings | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        split_table_name(table)
        self.table = table
        self.ident = table_identifier(table)
        self.index = (index or IndexSettings()).check()
        self.connect = _as_connect(connect)
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep

    def run_transaction(self, work: Callable[[Session], Any]) -> tuple[Any, int]:
        """Runs `work(session)` in one transaction, re-run when that can cure a failure. Returns (result, attempts)."""

        def guarded(session: Session):
            stop_with_client(session)
            return work(session)

        return run_transaction(self.connect, guarded, retries=self.retries, backoff=self.backoff, sleep=self.sleep)

    # -- schema -----------------------------------------------------------------------------
    def existing_column_type(self, session: Session) -> str | None:
        """`vector(384)` / `halfvec(3072)` of the table's embedding column, or None if there is no table."""
        return schema.existing_column_type(session, self.table)

    def ensure_extension(self, session: Session) -> None:
        if not schema.has_extension(session):
            advisory_lock(session, lock_key("extension", "vector"))
            schema.create_extension(session)

    def lock_for_write(self, session: Session, dimension: int, *, exclusive: bool = False) -> tuple[str, bool]:
        """Takes the table's advisory lock (exclusive to create it or when `exclusive`, shared to upsert into
        it), creating the table if missing; checks an existing one's dimension. Returns (column type, created)."""
        self.ensure_extension(session)
        key = table_lock_key(session, self.table)
        existing = self.existing_column_type(session)
        if existing is None:
            advisory_lock(session, key)
            existing = self.existing_column_type(session)  # another writer may have created it meanwhile
            if existing is None:
                schema_name, _ = split_table_name(self.table)
                if schema_name:
                    advisory_lock(session, lock_key("schema", schema_name))
                kind = schema.create_table(session, self.table, dimension)
                fulltext.add_text_column(session, self.table, self.index.text_search)
                return kind, True
        else:
            # a table written before full-text search gets its column once, under the exclusive lock (fulltext)
            add_text = self.index.text_search != "none" and fulltext.text_column(session, self.table)[1] is None
            advisory_lock(session, key, shared=not (exclusive or add_text))
            if add_text and fulltext.text_column(session, self.table)[1] is None:  # again, now under the lock
                fulltext.add_text_column(session, self.table, self.index.text_search)
        schema.check_dimension(self.table, existing, dimension)
        return existing, False

    def index_name(self) -> str:
        return schema.index_name(self.table, self.index)

    def ensure_index(self, session: Session, kind: str, rows: int, *, locked: bool = True) -> str:
        """Builds the configured index if the table has none of that access method on `embedding`.

        Args:
            locked: Whether the session holds the table's exclusive advisory lock already; if not it is
                taken (only when the index is missing) and the catalog looked at again.

        Returns:
            The new index's name, or "".
        """
        if metadata_index.missing_indexes(session, self.table, self.index):  # the filters' (metadata_index)
            if not locked:
                advisory_lock(session, table_lock_key(session, self.table))
                locked = True
            metadata_index.create_indexes(
                session, self.table, metadata_index.missing_indexes(session, self.table, self.index)
            )
        if self.index.kind == "none" or schema.vector_indexes(session, self.table, (self.index.kind,)):
            return ""
        if not locked:
            advisory_lock(session, table_lock_key(session, self.table))
        return schema.build_index(session, self.table, self.index, kind, rows)

    def prepare(self, dimension: int) -> str:
        """Creates the table and its index if missing, or checks an existing table's dimension (one
        transaction, under the same locks as `write`); what a streaming job runs before any worker writes.

        Returns:
            The name of the index built, or "".
        """

        def work(session: Session) -> str:
            kind, created = self.lock_for_write(session, dimension)
            return self.ensure_index(session, kind, 0, locked=created)

        try:
            return self.run_transaction(work)[0]
        except Exception as err:
            if not is_database_error(err):
                raise
            raise batch_error(self.table, 0, err) from None

    # -- writing ----------------------------------------------------------------------------
    def write(self, batch: VectorBatch, mode: str = "append") -> WriteResult:
        """Upserts every row of `batch` (one row per id, latest values) in one transaction.

        Args:
            batch: The rows.
            mode: "append" (default): the table's other rows stay. "snapshot": the batch is the whole
                truth; rows whose id is not in it are deleted in the same transaction, under the table's
                exclusive advisory lock (`embedpipe.vectorstore.snapshot`). A snapshot of no rows is refused.

        Raises:
            DataValidationError: bad ids/vectors/metadata, a dimension the table does not have, or a row
                the database refused (named by its id); nothing is written.
            VectorStoreError: the database refused the write for another reason; nothing is written.
            ValueError: an unknown mode, or a snapshot of no rows; nothing is written.
        """
        check_write(mode, self.table, len(batch))
        validate_batch(batch)
        snapshot = mode == "snapshot"
        started = time.monotonic()

        def work(session: Session) -> WriteResult:
            kind, created = self.lock_for_write(session, batch.dimension, exclusive=snapshot)
            result = WriteResult(self.table, len(batch), created_table=created)
            if len(batch) and created:  # nothing to conflict with (ids are unique): straight into the table
                session.copy_rows(self.ident, self._rows(batch), kind.split("(")[0])
                result.inserted = len(batch)
            elif len(batch):
                staging = self._staging()
                self._load_staging(session, batch, kind)
                rebuild = plan_rebuild(session, self.table, staging, self.index, len(batch), snapshot=snapshot)
                if rebuild is not None:
                    schema.drop_indexes(session, rebuild.indexes)
                if rebuild is not None and rebuild.rewrite:
                    result.deleted = rewrite_table(session, self.table, staging, keep_missing=not snapshot)
                    result.inserted, result.updated = rebuild.inserted, rebuild.updated
                else:
                    if snapshot:
                        result.deleted = delete_missing(session, self.table, staging)
                    result.inserted, result.updated = self._upsert_from_staging(session)
                if rebuild is not None:
                    result.index_built = schema.recreate_indexes(session, rebuild.indexes, self.index)
                result.unchanged = len(batch) - result.inserted - result.updated
            built = self.ensure_index(session, kind, len(batch), locked=created or snapshot)
            result.index_built = ", ".join(name for name in (result.index_built, built) if name)
            return result

        try:
            result, attempts = self.run_transaction(work)
        except Exception as err:
            if not is_database_error(err):
                raise
            raise explain(err, self.table, batch, self.connect) from None
        result.attempts = attempts
        result.seconds = time.monotonic() - started
        log.info(
            "wrote %d rows to %s (%s) in %.2f s (%d inserted, %d updated, %d unchanged, %d deleted%s)",
            result.rows,
            self.table,
            mode,
            result.seconds,
            result.inserted,
            result.updated,
            result.unchanged,
            result.deleted,
            f"; index {result.index_built} built" if result.index_built else "",
        )
        return result

    def _rows(self, batch: VectorBatch):
        """`database_rows(batch)` with progress lines as COPY takes them (a retried transaction starts over)."""
        progress = Progress(f"upload into {self.table}", total=len(batch), unit="rows")
        for row in database_rows(batch):
            yield row
            progress.update()
        progress.finish()

    def _staging(self) -> sql.Identifier:
        return sql.Identifier(derived_name(self.table, "staging"))

    def _load_staging(self, session: Session, batch: VectorBatch, kind: str) -> None:
        staging = self._staging()
        session.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (id TEXT, embedding {}, content TEXT, metadata JSONB) ON COMMIT DROP"
            ).format(staging, sql.SQL(kind))
        )
        session.copy_rows(staging, self._rows(batch), kind.split("(")[0])

    def _upsert_from_staging(self, session: Session) -> tuple[int, int]:
        counts = session.execute(
            sql.SQL(
                "WITH written AS ("
                " INSERT INTO {target} AS t (id, embedding, content, metadata)"
                # id order: concurrent upserts take their row locks in the same order (no deadlock)
                " SELECT id, embedding, content, metadata FROM {staging} ORDER BY id"
                " ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, content = EXCLUDED.content,"
                " metadata = EXCLUDED.metadata"
                # unchanged rows are left alone: a re-run rewrites (and re-indexes) nothing
                " WHERE (t.embedding, t.content, t.metadata) IS DISTINCT FROM (EXCLUDED.embedding, EXCLUDED.content, EXCLUDED.metadata)"
                " RETURNING (xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
            ).format(target=self.ident, staging=self._staging())
        )
        return int(counts[0][0]), int(counts[0][1])

    def delete(self, ids: Sequence[str]) -> int:
        """Deletes the rows with these ids (one transaction); returns how many were deleted."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0

        def work(session: Session) -> int:
            if self.existing_column_type(session) is None:
                return 0
            return int(
                session.execute(
                    sql.SQL(
                        # rows locked in id order, as upserts lock them: the two do not deadlock
                        "WITH gone AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE id = ANY(%s)"
                        " ORDER BY id FOR UPDATE) RETURNING 1) SELECT count(*) FROM gone"
                    ).format(t=self.ident),
                    (ids,),
                )[0][0]
            )

        return self.run_transaction(work)[0]

    def delete_documents(self, doc_ids: Sequence[str], keep_ids: Sequence[str] = (), *, chunk_separator: str) -> int:
        """Deletes the rows of these documents (the row `id` and its chunk rows) except `keep_ids`.

        One transaction (retried like the writes). A chunk row belongs to a document when its
        `metadata->>'document_id'` is the document's id and its own id continues that id with
        `chunk_separator` (`d1#0`; the embedding job's `embedpipe.embed.documents.chunk_id` decides the
        separator). On a large chunked table an expression index on `metadata->>'document_id'` keeps this fast.

        Returns:
            The number of rows deleted.
        """
        if not doc_ids:
            return 0

        def work(session: Session) -> int:
            if self.existing_column_type(session) is None:
                return 0
            query = sql.SQL(
                "WITH gone AS (DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE (id = ANY(%s::text[])"
                " OR (metadata->>'document_id' = ANY(%s::text[]) AND starts_with(id, (metadata->>'document_id') || %s)))"
                " AND NOT (id = ANY(%s::text[])) ORDER BY id FOR UPDATE) RETURNING 1) SELECT count(*) FROM gone"
            ).format(t=self.ident)
            ids = [str(i) for i in doc_ids]
            return int(session.execute(query, (ids, ids, chunk_separator, [str(i) for i in keep_ids]))[0][0])

        return self.run_transaction(work)[0]

    def count(self) -> int:
        return int(
            self.run_transaction(lambda s: s.execute(sql.SQL("SELECT count(*) FROM {}").format(self.ident)))[0][0][0]
        )
