"""The pgvector table's DDL: extension, table, column types, and the vector index (found by what it indexes).

Table: `id TEXT PRIMARY KEY, embedding VECTOR(n)` (`HALFVEC(n)` above 2,000 dimensions, the most an
HNSW index takes for `vector`), `content TEXT, metadata JSONB`.

An index is found in the catalog by its column (`embedding`) and access method (`hnsw`, `ivfflat`),
never by its name: Postgres truncates names to 63 bytes, so two long table names sharing a prefix would
otherwise see each other's index. New index names carry a hash when they must be cut
(`identifiers.unique_derived_name`). The callers (`postgres.PgVectorWriter`) hold the table's advisory
lock (`transactions`) around every statement here that creates something.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.validation import DataValidationError, Problem
from embedpipe.vectorstore.fulltext import check_text_search
from embedpipe.vectorstore.identifiers import split_table_name, table_identifier, unique_derived_name
from embedpipe.vectorstore.sessions import Session

#: Above this many dimensions the column is HALFVEC (pgvector indexes `vector` up to 2,000 dimensions).
HALFVEC_ABOVE = 2000
INDEX_KINDS = ("hnsw", "ivfflat", "none")
VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")
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
        rebuild_fraction: An upsert that adds or changes at least this fraction of the table's rows (and
            at least `REBUILD_MIN_ROWS`) drops the vector index and builds it again in the same
            transaction instead of inserting row by row into it, which is many times slower (see
            benchmarks/README.md, upsert_recovery). Searches wait for such an upsert to commit.
            0 = never rebuild.
        metadata_index: "gin" (default): a GIN index on `metadata` (`jsonb_path_ops`) serving the
            equalities and `in (...)` of search filters; "none".
        filter_fields: Metadata fields to index for ranges, `!=` and dates, as `key:type` (type
            number, date, text or boolean; the key as in a filter, `author.country:text`), e.g.
            ("year:number", "published:date"). See `metadata_index`.
        text_search: The text search configuration of the table's full-text column (`fulltext`): "english"
            (stems; chosen on SciFact's train queries, see benchmarks/README.md, search), "simple" (lower-cases
            only), another PostgreSQL configuration, or "none" (no column). A table setting: fixed when the
            column is added, on the table's creation or the first write to an older table.
    """

    kind: str = "hnsw"
    metric: str = "cosine"
    m: int = 16
    ef_construction: int = 64
    lists: int = 0
    maintenance_work_mem: str = "1GB"
    parallel_workers: int | None = None
    rebuild_fraction: float = 0.1
    metadata_index: str = "gin"
    filter_fields: tuple[str, ...] = ()
    text_search: str = "english"

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
        if not 0 <= self.rebuild_fraction <= 1:
            raise ValueError(f"rebuild_fraction {self.rebuild_fraction!r} must be between 0 and 1")
        from embedpipe.vectorstore.metadata_index import METADATA_INDEX_KINDS, parse_field

        if self.metadata_index not in METADATA_INDEX_KINDS:
            raise ValueError(f"metadata_index {self.metadata_index!r} is not one of {METADATA_INDEX_KINDS}")
        if isinstance(self.filter_fields, str):
            raise ValueError(f"filter_fields must be a list of key:type, got the text {self.filter_fields!r}")
        for spec in self.filter_fields:
            parse_field(spec)
        check_text_search(self.text_search)
        return self


#: The fewest added or changed rows for which an upsert rebuilds the index (a small one inserts into it).
REBUILD_MIN_ROWS = 1000


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


def has_extension(session: Session) -> bool:
    return bool(session.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))


def create_extension(session: Session) -> None:
    """CREATE EXTENSION vector (the caller holds the extension's advisory lock), then registers its types."""
    session.execute("CREATE EXTENSION IF NOT EXISTS vector")
    session.register_vector()


def existing_column_type(session: Session, table: str) -> str | None:
    """`vector(384)` / `halfvec(3072)` of the table's embedding column, or None if there is no table."""
    rows = session.execute(
        "SELECT c.oid IS NOT NULL, (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = c.oid AND a.attname = 'embedding' AND NOT a.attisdropped) "
        "FROM (SELECT to_regclass(%s)::oid AS oid) c",
        (session.render(table_identifier(table)),),
    )
    exists, kind = rows[0]
    if exists and kind is None:
        raise DataValidationError([Problem(table, None, "embedding", "the table exists but has no embedding column")])
    return kind


def check_dimension(table: str, existing: str, dimension: int) -> None:
    _, existing_dim = parse_column_type(existing)
    if dimension and existing_dim != dimension:
        raise DataValidationError(
            [
                Problem(
                    table,
                    None,
                    "embedding",
                    f"the table holds {existing_dim}-dimensional vectors; these have {dimension} "
                    "(a different model? write to another table)",
                )
            ]
        )


def create_table(session: Session, table: str, dimension: int) -> str:
    """Creates the schema (if any) and the table (the caller holds their advisory locks); returns the column type."""
    if dimension <= 0:
        raise DataValidationError([Problem(table, None, "embedding", "no rows to infer the dimension from")])
    kind = column_type(dimension)
    schema, _ = split_table_name(table)
    if schema:
        session.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    session.execute(
        sql.SQL("CREATE TABLE {} (id TEXT PRIMARY KEY, embedding {}, content TEXT, metadata JSONB)").format(
            table_identifier(table), sql.SQL(kind)
        )
    )
    return kind


def index_name(table: str, settings: IndexSettings) -> str:
    return unique_derived_name(table, f"embedding_{settings.kind}")


def vector_indexes(session: Session, table: str, methods: tuple[str, ...] = VECTOR_INDEX_METHODS) -> list[tuple]:
    """(schema, name, definition) of the table's indexes on `embedding` with one of these access methods."""
    return [
        tuple(row)
        for row in session.execute(
            "SELECT n.nspname, ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace"
            " JOIN pg_am am ON am.oid = ic.relam"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])"
            " WHERE i.indrelid = to_regclass(%s) AND a.attname = 'embedding' AND am.amname = ANY(%s)"
            " ORDER BY ic.relname",
            (session.render(table_identifier(table)), list(methods)),
        )
    ]


def set_build_memory(session: Session, settings: IndexSettings) -> None:
    session.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(settings.maintenance_work_mem)))
    if settings.parallel_workers is not None:
        session.execute(
            sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(
                sql.Literal(int(settings.parallel_workers))
            )
        )


def build_index(session: Session, table: str, settings: IndexSettings, kind: str, rows: int) -> str:
    """Builds the configured index unless the table has one of that access method on `embedding`.

    Returns:
        The new index's name, or "" (none configured, or one exists).
    """
    if settings.kind == "none" or vector_indexes(session, table, (settings.kind,)):
        return ""
    name = index_name(table, settings)
    set_build_memory(session, settings)
    ops = sql.SQL(f"{kind.split('(')[0]}_{METRICS[settings.metric][1]}")
    if settings.kind == "hnsw":
        options = sql.SQL("m = {}, ef_construction = {}").format(
            sql.Literal(settings.m), sql.Literal(settings.ef_construction)
        )
    else:
        lists = settings.lists or (max(1, rows // 1000) if rows <= 1_000_000 else int(rows**0.5))
        options = sql.SQL("lists = {}").format(sql.Literal(lists))
    session.execute(
        sql.SQL("CREATE INDEX {} ON {} USING {} (embedding {}) WITH ({})").format(
            sql.Identifier(name), table_identifier(table), sql.SQL(settings.kind), ops, options
        )
    )
    return name


def drop_indexes(session: Session, indexes: list[tuple]) -> None:
    for schema, name, _ in indexes:
        session.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))


def recreate_indexes(session: Session, indexes: list[tuple], settings: IndexSettings) -> str:
    """Builds dropped indexes again from their own definitions (bulk builds); returns their names."""
    if indexes:
        set_build_memory(session, settings)
    for _, _, definition in indexes:
        session.execute(definition)
    return ", ".join(name for _, name, _ in indexes)


def estimated_rows(session: Session, table: str) -> int:
    """The planner's row count of the table (set by the index build, VACUUM, ANALYZE), else an exact count."""
    estimate = session.execute(
        "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (session.render(table_identifier(table)),)
    )
    if estimate and estimate[0][0] is not None and estimate[0][0] >= 0:
        return int(estimate[0][0])
    return int(session.execute(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(table)))[0][0])
