"""A parsed filter (`filters`) as parameterised SQL over the table's `metadata JSONB` column.

Every key and every value is a query parameter (`%s`); the SQL text comes only from the templates
here, whatever the filter says. How each comparison is written decides which index serves it:

- `key = value` (text, number, boolean, null) and `in (...)` of those: `metadata @> %s::jsonb`, the
  containment the table's GIN index (`jsonb_path_ops`, `metadata_index`) answers; the JSON document
  `{"key": value}` is serialised by `json.dumps`, never pasted together.
- ranges, `!=` and dates: a typed expression per key (`typed_value`), NULL unless the row's value
  has the literal's type, so a row holding another type simply does not match (no cast error). For a
  field declared in `IndexSettings.filter_fields` the same expression is indexed (B-tree), and the
  planner uses that index for ranges (`metadata_index.field_index_sql`).

Text and dates (ISO `YYYY-MM-DD` text, a timestamp compared by its first 10 characters) are compared
in code-point order (`COLLATE "C"`), whatever the database's collation.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore.filters import And, AnyOf, Comparison, Filter, Or, Value, value_type

#: A JSON string that starts with an ISO date (and a time after `T` or a space, if anything).
ISO_DATE_PATTERN = "^[0-9][0-9][0-9][0-9]-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([T ]|$)"
_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_CASTS = {"number": "numeric", "text": "text", "date": "text", "boolean": "boolean"}


def key_path(path: tuple[str, ...], params: list | None) -> sql.Composable:
    """`metadata -> k1 -> k2` (each key a parameter appended to `params`; with None, a quoted literal: DDL)."""
    parts: list[sql.Composable] = [sql.SQL("metadata")]
    for key in path:
        parts.append(sql.SQL(" -> "))
        parts.append(_param(key, params))
    return sql.Composed(parts)


def _param(value: str, params: list | None) -> sql.Composable:
    if params is None:
        return sql.SQL("{}::text").format(sql.Literal(value))
    params.append(value)
    return sql.SQL("%s::text")


def typed_value(path: tuple[str, ...], kind: str, params: list | None) -> sql.Composable:
    """The row's value at `path` as SQL of `kind` ("number", "text", "date", "boolean"), NULL for any other type.

    The expression is immutable, so it can be indexed; the query and the index must spell it alike,
    which is why both come from here.
    """
    json_type = {"number": "number", "text": "string", "date": "string", "boolean": "boolean"}[kind]
    guard = sql.Composed([sql.SQL("jsonb_typeof("), key_path(path, params), sql.SQL(f") = '{json_type}'")])
    if kind == "number":
        value = sql.Composed([sql.SQL("("), key_path(path, params), sql.SQL(")::numeric")])
    elif kind == "boolean":
        value = sql.Composed([sql.SQL("("), key_path(path, params), sql.SQL(")::boolean")])
    else:
        text = _text_at(path, params)
        if kind == "date":
            guard = sql.Composed(
                [guard, sql.SQL(" AND "), _text_at(path, params), sql.SQL(f" ~ '{ISO_DATE_PATTERN}'")]
            )
            value = sql.Composed([sql.SQL("left("), text, sql.SQL(", 10)")])
        else:
            value = text
    collate = ' COLLATE "C"' if kind in ("text", "date") else ""
    return sql.Composed([sql.SQL("(CASE WHEN "), guard, sql.SQL(" THEN "), value, sql.SQL(f" END){collate}")])


def _text_at(path: tuple[str, ...], params: list | None) -> sql.Composable:
    """`metadata -> k1 ->> k2`: the JSON string's text (the guard has checked that it is a string)."""
    parts: list[sql.Composable] = [sql.SQL("(metadata")]
    for i, key in enumerate(path):
        parts.append(sql.SQL(" ->> " if i == len(path) - 1 else " -> "))
        parts.append(_param(key, params))
    parts.append(sql.SQL(")"))
    return sql.Composed(parts)


def compile_filter(tree: Filter) -> tuple[sql.Composable, list]:
    """The filter as a boolean SQL expression over `metadata`, and its parameters in order.

    Example:
        >>> from embedpipe.vectorstore.filters import parse_filter
        >>> where, params = compile_filter(parse_filter("year >= 2020 and lang = 'en'"))
        >>> params
        ['year', 'year', '2020', '{"lang": "en"}']
    """
    params: list = []
    return _compile(tree, params), params


def compile_filter_named(tree: Filter, prefix: str) -> tuple[sql.Composable, dict]:
    """`compile_filter` with named placeholders (`%(<prefix>0)s`, ...), for a statement whose other
    parameters are named; the SQL text still comes only from this module's templates."""
    expression, values = compile_filter(tree)
    counter = iter(range(len(values)))

    def rename(part: sql.Composable) -> sql.Composable:
        if isinstance(part, sql.Composed):
            return sql.Composed([rename(item) for item in part])
        if isinstance(part, sql.SQL) and "%s" in part.as_string(None):
            pieces = part.as_string(None).split("%s")
            named: list[sql.Composable] = [sql.SQL(pieces[0])]
            for piece in pieces[1:]:
                named += [sql.Placeholder(f"{prefix}{next(counter)}"), sql.SQL(piece)]
            return sql.Composed(named)
        return part

    renamed = rename(expression)
    return renamed, {f"{prefix}{i}": value for i, value in enumerate(values)}


def _compile(tree: Filter, params: list) -> sql.Composable:
    if isinstance(tree, (And, Or)):
        joiner = sql.SQL(" AND " if isinstance(tree, And) else " OR ")
        return sql.Composed([sql.SQL("("), joiner.join([_compile(part, params) for part in tree.parts]), sql.SQL(")")])
    if isinstance(tree, AnyOf):
        if value_type(tree.values[0]) == "date":
            expression = typed_value(tree.path, "date", params)
            params.append([value.isoformat() for value in tree.values])
            return sql.Composed([expression, sql.SQL(" = ANY(%s::text[])")])
        return sql.Composed(
            [sql.SQL("("), sql.SQL(" OR ").join([_contains(tree.path, v, params) for v in tree.values]), sql.SQL(")")]
        )
    return _comparison(tree, params)


def _comparison(tree: Comparison, params: list) -> sql.Composable:
    kind = value_type(tree.value)
    if tree.op == "=" and kind != "date":
        return _contains(tree.path, tree.value, params)
    if kind == "null":  # != null: present and not null
        return sql.Composed([sql.SQL("jsonb_typeof("), key_path(tree.path, params), sql.SQL(") <> 'null'")])
    expression = typed_value(tree.path, kind, params)
    params.append(_sql_value(tree.value))
    return sql.Composed([expression, sql.SQL(f" {_SQL_OPERATORS[tree.op]} %s::{_CASTS[kind]}")])


def _contains(path: tuple[str, ...], value: Value, params: list) -> sql.Composable:
    document = _json_value(value)
    for key in reversed(path):
        document = "{" + json.dumps(key, ensure_ascii=False) + ": " + document + "}"
    params.append(document)
    return sql.SQL("metadata @> %s::jsonb")


def _json_value(value: Value) -> str:
    """JSON text of a literal; numbers keep their exact decimal digits (no float rounding)."""
    if isinstance(value, Decimal):
        return str(value)  # 1E+2, -0.5, 0E-7: all JSON numbers
    return json.dumps(value, ensure_ascii=False)


def _sql_value(value: Value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value
