"""Filters written by code rather than by hand: quoting keys and text, the old `where` pairs, combining.

Example:
    >>> from embedpipe.vectorstore.filter_build import quote_key, quote_text
    >>> print(quote_key("my.key") + " = " + quote_text("it's"))
    "my.key" = 'it''s'
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from embedpipe.vectorstore.filters import (
    MAX_EXPONENT,
    NUMBER_PATTERN,
    And,
    Comparison,
    Filter,
    FilterError,
    Or,
)


def quote_key(key: str) -> str:
    """A key as a filter writes it, whatever it holds: in double quotes, a quote inside doubled."""
    return '"' + key.replace('"', '""') + '"'


def quote_text(value: str) -> str:
    """A text value as a filter writes it: in single quotes, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def where_filter(where: Mapping[str, Any]) -> Filter | None:
    """The old `where={key: value}` (and `--where key=value`) as a filter: every key must match.

    Before the filter language, a row matched when `metadata->>key` equalled the value as text, so
    `n=11` matched both the number 11 and the text "11"; each pair becomes that `or` of a text and a
    typed equality. A key is one top-level key (a dot is part of it, not a path).
    """
    parts = []
    for key, value in where.items():
        key = str(key)
        if "\x00" in key:
            raise FilterError(
                key, key.index("\x00") + 1, "a NUL character (\\0) cannot be stored or compared in PostgreSQL"
            )
        if isinstance(value, (dict, list, tuple)):
            raise FilterError(key, 1, f"where {key!r}: a value must be text, a number, true, false or null")
        text = (
            value
            if isinstance(value, str)
            else "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        if "\x00" in text:
            raise FilterError(
                text, text.index("\x00") + 1, "a NUL character (\\0) cannot be stored or compared in PostgreSQL"
            )
        options: list[Filter] = [Comparison((key,), "=", text)]
        typed = _scalar(text)
        if typed is not _NOT_SCALAR:
            options.append(Comparison((key,), "=", typed))
        parts.append(options[0] if len(options) == 1 else Or(tuple(options)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


_NOT_SCALAR = object()


def _scalar(text: str):
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    if NUMBER_PATTERN.fullmatch(text):
        value = Decimal(text)
        if abs(value.adjusted()) <= MAX_EXPONENT or value == 0:
            return value
    return _NOT_SCALAR


def combine(*filters: Filter | None) -> Filter | None:
    """All of the given filters (None = no filter)."""
    parts = tuple(f for f in filters if f is not None)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(parts)
