"""Writing vectors into PostgreSQL + pgvector: the table Beam's AlloyDB writer uses, loaded fast and safely.

Table: `id TEXT PRIMARY KEY, embedding VECTOR(n)` (`HALFVEC(n)` above 2,000 dimensions, the most an
HNSW index takes for `vector`), `content TEXT, metadata JSONB`.

One upload is one transaction, retried whole on a new connection when the connection drops, so the
table holds either all of an upload or none of it:

1. rows are checked (ids, NaN/inf, dimension, JSON) before connecting;
2. the extension and table are created if missing, an existing table's dimension is checked;
3. a new table is loaded with binary COPY directly; an existing one through a temporary staging table
   (COPY) and one `INSERT ... ON CONFLICT (id) DO UPDATE` that skips unchanged rows;
4. an HNSW (or IVFFlat) index with cosine / inner-product / L2 ops is built if missing, with
   `maintenance_work_mem` raised for this transaction only (the build is where the time goes).

Deletes are one transaction too: rows by id (`delete`), or documents with their chunk rows
(`delete_documents`, what the streaming job applies). Every statement that changes a pgvector table is
here (reads are in `search`), so the jobs that write run no SQL of their own.

Example:
    >>> from embedpipe.vectorstore import PgVectorWriter, read_parquet_vectors   # doctest: +SKIP
    >>> writer = PgVectorWriter("postgresql://...", table="embeddings")           # doctest: +SKIP
    >>> writer.write(read_parquet_vectors("vectors/")).rows                       # doctest: +SKIP
    5183
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from embedpipe.validation import DataValidationError, Problem
from embedpipe.vectorstore.identifiers import derived_name, split_table_name, table_identifier
from embedpipe.vectorstore.rows import VectorBatch, validate_batch
from embedpipe.vectorstore.sessions import Session, is_connection_lost

log = logging.getLogger(__name__)

#: Above this many dimensions the column is HALFVEC (pgvector indexes `vector` up to 2,000 dimensions).
HALFVEC_ABOVE = 2000
INDEX_KINDS = ("hnsw", "ivfflat", "none")
#: metric -> (operator used by search, operator class suffix)
METRICS = {"cosine": ("<=>", "cosine_ops"), "ip": ("<#>", "ip_ops"), "l2": ("<->", "l2_ops")}
_MEMORY = re.compile(r"^\d+\s*(kB|MB|GB)$")
_COLUMN_TYPE = re.compile(r"^(vector|halfvec)\((\d+)\)$")


@dataclass
class IndexSettings:
    """The vector index built after loading (if the table does not have one yet).

    Attributes:
        kind: "hnsw" (default), "ivfflat" or "none".
        metric: "cosine" (default; embedpipe's vectors are normalized), "ip" or "l2".
        m: HNSW links per node.
        ef_construction: HNSW build-time candidate list size.
        lists: IVFFlat lists (0 = rows/1000, or sqrt(rows) above a million, as pgvector advises).
        maintenance_work_mem: Memory for the build, set for this transaction only. An HNSW graph that
            does not fit is built much more slowly (the server's default is 64MB).
        parallel_workers: `max_parallel_maintenance_workers` for the build (None = the server's).
    """

    kind: str = "hnsw"
    metric: str = "cosine"
    m: int = 16
    ef_construction: int = 64
    lists: int = 0
    maintenance_work_mem: str = "1GB"
    parallel_workers: int | None = None

    def check(self) -> IndexSettings:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind {self.kind!r} is not one of {INDEX_KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"index metric {self.metric!r} is not one of {tuple(METRICS)}")
        if not _MEMORY.match(self.maintenance_work_mem or ""):
            raise ValueError(f"maintenance_work_mem {self.maintenance_work_mem!r} must look like 512MB or 2GB")
        for name in ("m", "ef_construction", "lists"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"index {name} must be a non-negative integer")
        return self


@dataclass
class WriteResult:
    """What one upload did."""

    table: str
    rows: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
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
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "attempts": self.attempts,
        }


def column_type(dimension: int) -> str:
    """`vector(n)`, or `halfvec(n)` above HALFVEC_ABOVE dimensions."""
    return f"{'halfvec' if dimension > HALFVEC_ABOVE else 'vector'}({int(dimension)})"


def parse_column_type(text: str) -> tuple[str, int]:
    match = _COLUMN_TYPE.match(text or "")
    if not match:
        raise DataValidationError(
            [Problem("database", None, "embedding", f"column type {text!r} is not vector(n) or halfvec(n)")]
        )
    return match.group(1), int(match.group(2))


def _as_connect(connect) -> Callable[[], Any]:
    if callable(connect):
        return connect
    if isinstance(connect, str):
        from embedpipe.vectorstore.connections import ConnectionSettings

        return ConnectionSettings(uri=connect).connection_factory()
    return connect.connection_factory()  # ConnectionSettings


class PgVectorWriter:
    """Writes VectorBatches into one pgvector table; deletes rows by id, or whole documents with their chunks.

    Args:
        connect: A Postgres URI, a `ConnectionSettings`, or a function returning a new connection
            (psycopg or pg8000); called again for each retry.
        table: `table` or `schema.table`; validated (a name like `x; DROP TABLE y` is refused).
        index: The index to build if missing (IndexSettings(kind="none") for none).
        retries: New connections tried after a dropped one (the whole transaction is re-run).
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

    # -- transactions -------------------------------------------------------------------------
    def run_transaction(self, work: Callable[[Session], Any]) -> tuple[Any, int]:
        """Runs `work(session)` in one transaction; on a dropped connection, again on a new one.

        Returns:
            (work's result, attempts).
        """
        attempt = 0
        while True:
            attempt += 1
            session = None
            try:
                session = Session(self.connect())
                result = work(session)
                session.commit()
                return result, attempt
            except Exception as err:
                if session is not None:
                    session.rollback()
                if attempt > self.retries or not is_connection_lost(err):
                    raise
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "connection lost (%s); retrying the whole transaction in %.1f s (attempt %d of %d)",
                    type(err).__name__,
                    delay,
                    attempt + 1,
                    self.retries + 1,
                )
                self.sleep(delay)
            finally:
                if session is not None:
                    session.close()

    # -- schema -----------------------------------------------------------------------------
    def _regclass_text(self, session: Session) -> str:
        return session.render(self.ident)

    def existing_column_type(self, session: Session) -> str | None:
        """`vector(384)` / `halfvec(3072)` of the table's embedding column, or None if there is no table."""
        rows = session.execute(
            "SELECT c.oid IS NOT NULL, (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = c.oid AND a.attname = 'embedding' AND NOT a.attisdropped) "
            "FROM (SELECT to_regclass(%s)::oid AS oid) c",
            (self._regclass_text(session),),
        )
        exists, kind = rows[0]
        if exists and kind is None:
            raise DataValidationError(
                [Problem(self.table, None, "embedding", "the table exists but has no embedding column")]
            )
        return kind

    def ensure_extension(self, session: Session) -> None:
        if not session.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'"):
            session.execute("CREATE EXTENSION IF NOT EXISTS vector")
        session.register_vector()

    def ensure_table(self, session: Session, dimension: int) -> tuple[str, bool]:
        """Creates the table if missing; checks an existing one's dimension. Returns (column type, created)."""
        self.ensure_extension(session)
        existing = self.existing_column_type(session)
        if existing is None:
            if dimension <= 0:
                raise DataValidationError(
                    [Problem(self.table, None, "embedding", "no rows to infer the dimension from")]
                )
            kind = column_type(dimension)
            schema, _ = split_table_name(self.table)
            if schema:
                session.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            session.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY, embedding {} , content TEXT, metadata JSONB)"
                ).format(self.ident, sql.SQL(kind))
            )
            return kind, True
        _, existing_dim = parse_column_type(existing)
        if dimension and existing_dim != dimension:
            raise DataValidationError(
                [
                    Problem(
                        self.table,
                        None,
                        "embedding",
                        f"the table holds {existing_dim}-dimensional vectors; these have {dimension} "
                        "(a different model? write to another table)",
                    )
                ]
            )
        return existing, False

    def index_name(self) -> str:
        return derived_name(self.table, f"embedding_{self.index.kind}")

    def ensure_index(self, session: Session, kind: str, rows: int) -> str:
        """Builds the configured index if the table has none of that name; returns its name or ""."""
        settings = self.index
        if settings.kind == "none":
            return ""
        name = self.index_name()
        schema, _ = split_table_name(self.table)
        qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        if session.execute("SELECT to_regclass(%s) IS NOT NULL", (session.render(qualified),))[0][0]:
            return ""
        session.execute(
            sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(settings.maintenance_work_mem))
        )
        if settings.parallel_workers is not None:
            session.execute(
                sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(
                    sql.Literal(int(settings.parallel_workers))
                )
            )
        ops = sql.SQL(f"{kind.split('(')[0]}_{METRICS[settings.metric][1]}")
        if settings.kind == "hnsw":
            options = sql.SQL("m = {}, ef_construction = {}").format(
                sql.Literal(settings.m), sql.Literal(settings.ef_construction)
            )
        else:
            lists = settings.lists or (max(1, rows // 1000) if rows <= 1_000_000 else int(rows**0.5))
            options = sql.SQL("lists = {}").format(sql.Literal(lists))
        session.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} (embedding {}) WITH ({})").format(
                sql.Identifier(name), self.ident, sql.SQL(settings.kind), ops, options
            )
        )
        return name

    # -- writing ----------------------------------------------------------------------------
    def write(self, batch: VectorBatch) -> WriteResult:
        """Upserts every row of `batch` (one row per id, latest values) in one transaction.

        Raises:
            DataValidationError: bad ids/vectors/metadata, or a dimension the table does not have;
                nothing is written.
        """
        validate_batch(batch)
        started = time.monotonic()

        def work(session: Session) -> WriteResult:
            kind, created = self.ensure_table(session, batch.dimension)
            result = WriteResult(self.table, len(batch), created_table=created)
            if len(batch):
                rows = _copy_rows(batch)
                if created:  # nothing to conflict with (ids are unique): straight into the table
                    session.copy_rows(self.ident, rows, kind.split("(")[0])
                    result.inserted = len(batch)
                else:
                    result.inserted, result.updated = self._upsert_through_staging(session, rows, kind)
                    result.unchanged = len(batch) - result.inserted - result.updated
            result.index_built = self.ensure_index(session, kind, len(batch))
            return result

        result, attempts = self.run_transaction(work)
        result.attempts = attempts
        result.seconds = time.monotonic() - started
        log.info(
            "wrote %d rows to %s in %.2f s (%d inserted, %d updated, %d unchanged)",
            result.rows,
            self.table,
            result.seconds,
            result.inserted,
            result.updated,
            result.unchanged,
        )
        return result

    def _upsert_through_staging(self, session: Session, rows: Iterable[tuple], kind: str) -> tuple[int, int]:
        staging = sql.Identifier(derived_name(self.table, "staging"))
        session.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (id TEXT, embedding {}, content TEXT, metadata JSONB) ON COMMIT DROP"
            ).format(staging, sql.SQL(kind))
        )
        session.copy_rows(staging, rows, kind.split("(")[0])
        counts = session.execute(
            sql.SQL(
                "WITH written AS ("
                " INSERT INTO {target} AS t (id, embedding, content, metadata)"
                " SELECT id, embedding, content, metadata FROM {staging}"
                " ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, content = EXCLUDED.content,"
                " metadata = EXCLUDED.metadata"
                # unchanged rows are left alone: a re-run rewrites (and re-indexes) nothing
                " WHERE (t.embedding, t.content, t.metadata) IS DISTINCT FROM (EXCLUDED.embedding, EXCLUDED.content, EXCLUDED.metadata)"
                " RETURNING (xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
            ).format(target=self.ident, staging=staging)
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
                        "WITH gone AS (DELETE FROM {} WHERE id = ANY(%s) RETURNING 1) SELECT count(*) FROM gone"
                    ).format(self.ident),
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
                "WITH gone AS (DELETE FROM {} WHERE (id = ANY(%s::text[]) OR (metadata->>'document_id' = ANY(%s::text[])"
                " AND starts_with(id, (metadata->>'document_id') || %s))) AND NOT (id = ANY(%s::text[])) RETURNING 1)"
                " SELECT count(*) FROM gone"
            ).format(self.ident)
            ids = [str(i) for i in doc_ids]
            return int(session.execute(query, (ids, ids, chunk_separator, [str(i) for i in keep_ids]))[0][0])

        return self.run_transaction(work)[0]

    def count(self) -> int:
        return int(
            self.run_transaction(lambda s: s.execute(sql.SQL("SELECT count(*) FROM {}").format(self.ident)))[0][0][0]
        )


def _copy_rows(batch: VectorBatch) -> Iterable[tuple]:
    # jsonb in binary COPY is a version byte (1) and the JSON text; metadata is already checked JSON text
    return (
        (ident, embedding, content, None if not meta else meta) for ident, embedding, content, meta in batch.rows()
    )
