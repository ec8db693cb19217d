"""SQL identifiers (schema, table, index names): validated, then quoted with `psycopg.sql`.

A name is checked before it reaches any SQL, so `x; DROP TABLE y` is refused with a readable error
instead of being quoted into a strange but valid table name.
"""

from __future__ import annotations

import hashlib
import re

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

#: Plain Postgres identifiers: a letter or underscore, then letters, digits, `_` or `$`; at most 63 bytes.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class IdentifierError(ValueError):
    """A schema, table or index name that is not a plain SQL identifier."""


def check_identifier(name: str, what: str = "identifier") -> str:
    """Returns `name` if it is a plain identifier (letters, digits, `_`, `$`; max 63), else raises IdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.match(name):
        raise IdentifierError(
            f"{what} {name!r} is not allowed: use letters, digits and '_' (starting with a letter or '_', "
            "at most 63 characters), e.g. 'embeddings' or 'scifact_vectors'"
        )
    return name


def split_table_name(name: str) -> tuple[str | None, str]:
    """Splits `schema.table` (or `table`) and checks both parts."""
    if not isinstance(name, str):
        raise IdentifierError(f"table name must be a string, got {type(name).__name__}")
    parts = name.split(".")
    if len(parts) > 2:
        raise IdentifierError(f"table {name!r} is not allowed: give 'table' or 'schema.table'")
    if len(parts) == 2:
        return check_identifier(parts[0], "schema"), check_identifier(parts[1], "table")
    return None, check_identifier(parts[0], "table")


def table_identifier(name: str) -> sql.Identifier:
    """`schema.table` or `table` as a quoted `sql.Identifier`, after validation."""
    schema, table = split_table_name(name)
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def derived_name(table: str, suffix: str) -> str:
    """A related object's name (index, staging table): `<table>_<suffix>`, kept within 63 characters."""
    _, base = split_table_name(table)
    return check_identifier(f"{base[: 63 - len(suffix) - 1]}_{suffix}", "derived name")


def unique_derived_name(table: str, suffix: str) -> str:
    """Like `derived_name`, but two tables never share a name: when `<table>_<suffix>` would be cut to fit
    63 bytes, the cut name carries 8 hex digits of a hash of the full table name (Postgres would otherwise
    truncate two long names that share a prefix to the same one)."""
    schema, base = split_table_name(table)
    name = f"{base}_{suffix}"
    if len(name) <= 63:
        return check_identifier(name, "derived name")
    digest = hashlib.blake2b(f"{schema or ''}.{base}".encode(), digest_size=4).hexdigest()
    return check_identifier(f"{base[: 63 - len(suffix) - len(digest) - 2]}_{digest}_{suffix}", "derived name")
