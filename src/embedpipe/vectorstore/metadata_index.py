"""The indexes that serve metadata filters: GIN on `metadata`, and B-tree indexes on declared fields.

- `IndexSettings.metadata_index = "gin"` (the default): `CREATE INDEX ... USING gin (metadata
  jsonb_path_ops)`, which answers the `metadata @> '{"key": value}'` of every equality and `in (...)`
  of the filter language (`filter_sql`), whatever the key.
- `IndexSettings.filter_fields = ("year:number", "published:date", "source:text")`: one B-tree index
  per field on the typed expression `filter_sql.typed_value` writes for ranges, `!=` and dates, so
  `year >= 2020` reads an index instead of every row. Types: number, date, text, boolean.

They are created with the table (or by the first write after a setting asks for them), under the
table's exclusive advisory lock, like the vector index. An index is found by its name, which carries
a hash when cut to 63 bytes (`identifiers.unique_derived_name`), or for GIN by column and method.
"""

from __future__ import annotations

import hashlib
import logging
import re

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore.filter_sql import typed_value
from embedpipe.vectorstore.filters import FilterError, parse_key
from embedpipe.vectorstore.identifiers import table_identifier, unique_derived_name
from embedpipe.vectorstore.sessions import Session

log = logging.getLogger(__name__)

METADATA_INDEX_KINDS = ("gin", "none")
FIELD_TYPES = ("number", "date", "text", "boolean")


def parse_field(spec: str) -> tuple[tuple[str, ...], str]:
    """`"year:number"` → (("year",), "number"); the path is written as in a filter (`"a:b".c:text`).

    Raises:
        ValueError: no `:type`, an unknown type, or a key that does not parse.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"filter field {spec!r} must look like key:type, type one of {FIELD_TYPES}")
    key, _, kind = spec.rpartition(":")
    if kind not in FIELD_TYPES:
        raise ValueError(f"filter field {spec!r}: type {kind!r} is not one of {FIELD_TYPES}")
    try:
        return parse_key(key), kind
    except FilterError as err:
        raise ValueError(f"filter field {spec!r}: {err}") from None


def field_index_name(table: str, path: tuple[str, ...], kind: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(path))[:24]
    digest = hashlib.blake2b("\x00".join((*path, kind)).encode(), digest_size=3).hexdigest()
    return unique_derived_name(table, f"f_{readable}_{digest}")


def gin_index_name(table: str) -> str:
    return unique_derived_name(table, "metadata_gin")


def field_index_sql(table: str, path: tuple[str, ...], kind: str) -> sql.Composable:
    """The CREATE INDEX of one declared field (keys as quoted literals: DDL takes no parameters)."""
    return sql.SQL("CREATE INDEX {} ON {} (({}))").format(
        sql.Identifier(field_index_name(table, path, kind)), table_identifier(table), typed_value(path, kind, None)
    )


def has_gin_index(session: Session, table: str) -> bool:
    rows = session.execute(
        "SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])"
        " WHERE i.indrelid = to_regclass(%s) AND a.attname = 'metadata' AND am.amname = 'gin'",
        (session.render(table_identifier(table)),),
    )
    return bool(rows)


def _index_exists(session: Session, table: str, name: str) -> bool:
    rows = session.execute(
        "SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(%s) AND ic.relname = %s",
        (session.render(table_identifier(table)), name),
    )
    return bool(rows)


def missing_indexes(session: Session, table: str, settings) -> list[sql.Composable]:
    """The CREATE INDEX statements for what `settings` (an `IndexSettings`) asks and the table lacks."""
    statements = []
    if settings.metadata_index == "gin" and not has_gin_index(session, table):
        statements.append(
            sql.SQL("CREATE INDEX {} ON {} USING gin (metadata jsonb_path_ops)").format(
                sql.Identifier(gin_index_name(table)), table_identifier(table)
            )
        )
    for spec in settings.filter_fields:
        path, kind = parse_field(spec)
        if not _index_exists(session, table, field_index_name(table, path, kind)):
            statements.append(field_index_sql(table, path, kind))
    return statements


def create_indexes(session: Session, table: str, statements: list[sql.Composable]) -> int:
    """Runs the statements of `missing_indexes` (the caller holds the table's exclusive advisory lock)."""
    for statement in statements:
        session.execute(statement)
    if statements:
        log.info("built %d metadata index(es) on %s", len(statements), table)
    return len(statements)
