"""The metadata filter language of `search` and `embedpipe search --filter`: parsed into a typed tree.

A filter is comparisons of metadata keys with values, joined by `and` / `or` (`and` binds tighter),
grouped with parentheses:

    year >= 2020 and source in ('pubmed', 'pmc')
    (lang = 'ja' or lang = 'en') and published < 2024-05-01 and reviewed = true
    author.country != 'US'

Keys:
    A name of letters, digits, `_` and `-` (starting with a letter or `_`), or any text in double
    quotes (`"my key"`, a `"` inside written `""`). Dots make a path into nested objects:
    `author.country` is `{"author": {"country": ...}}` (quote a key that contains a dot: `"a.b"`).
Values:
    'text' in single quotes (a `'` inside written `''`; a backslash is an ordinary character),
    numbers (`42`, `-1.5`, `2e3`), dates (`2024-05-01`, unquoted), `true`, `false`, `null`.
Operators:
    `=`, `!=` (also `<>`), `<`, `<=`, `>`, `>=`, `in (v1, v2, ...)`; `and`, `or` and `in` are words
    in any case. `<` ... `>=` take numbers, dates and text (text in code-point order); `true`, `false`
    and `null` take `=` and `!=` only; the values of one `in (...)` are all of one type.

Types are kept, never coerced. A comparison matches a row only when the row's value at that key has
the literal's type: a JSON number for a number, a JSON string for text, a JSON string that starts
with an ISO date (`2024-05-01`, or a timestamp `2024-05-01T10:00:00Z`, compared by its date) for a
date, a JSON boolean, or JSON null. A row whose value has another type (`"year": "n/a"` against
`year > 2000`), or that lacks the key, matches neither `=` nor `!=`: no error, no match. `!= null`
matches a present value that is not null.

A filter that does not parse, uses an unknown operator, mixes types in one `in (...)`, orders by a
boolean or null, or holds a NUL character is refused with `FilterError` naming the column, before
anything is sent to the database. `filter_sql` turns the tree into parameterised SQL.

Example:
    >>> from embedpipe.vectorstore.filters import parse_filter
    >>> parse_filter("year >= 2020 and source = 'pubmed'")
    And(parts=(Comparison(path=('year',), op='>=', value=Decimal('2020'), column=1), \
Comparison(path=('source',), op='=', value='pubmed', column=18)))
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

#: Operators of a comparison (`<>` is read as `!=`).
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
ORDERING = ("<", "<=", ">", ">=")
#: Longest filter accepted, and deepest nesting of parentheses.
MAX_LENGTH = 10_000
MAX_DEPTH = 32
#: Largest decimal exponent of a number literal (PostgreSQL's numeric and jsonb take far more; floats 308).
MAX_EXPONENT = 300

Value = str | Decimal | dt.date | bool | None


class FilterError(ValueError):
    """A filter that cannot run; the message names the column and points at it under the filter."""

    def __init__(self, text: str, column: int, reason: str):
        self.text, self.column, self.reason = text, column, reason
        shown = "".join(" " if c in "\t\r\n" else "?" if ord(c) < 32 or c == "\x7f" else c for c in text)
        super().__init__(f"filter error at column {column}: {reason}\n  {shown}\n  {' ' * (column - 1)}^")


@dataclass(frozen=True)
class Comparison:
    """`path op value`; `column` (1-based) is where its key starts in the filter text."""

    path: tuple[str, ...]
    op: str
    value: Value
    column: int = 0


@dataclass(frozen=True)
class AnyOf:
    """`path in (values)`: any of the values, all of one type."""

    path: tuple[str, ...]
    values: tuple[Value, ...]
    column: int = 0


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


Filter = Comparison | AnyOf | And | Or


def value_type(value: Value) -> str:
    """ "number", "date", "text", "boolean" or "null": the JSON type a row's value must have to compare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Decimal):
        return "number"
    if isinstance(value, dt.date):
        return "date"
    return "text"


# -- tokens ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # name, key, string, number, date, op, word, "(", ")", ",", end
    text: str
    value: Any
    column: int


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9A-Za-z_.:\-])")
NUMBER_PATTERN = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![0-9A-Za-z_.])")
_OPERATOR_CHARS = "=!<>~"
_WORDS = {"and", "or", "in", "true", "false", "null"}


def _tokens(text: str) -> list[_Token]:
    tokens, i = [], 0
    while i < len(text):
        c, column = text[i], i + 1
        if c in " \t\r\n":
            i += 1
        elif c == "\x00":
            raise FilterError(text, column, "a NUL character (\\0) cannot be stored or compared in PostgreSQL")
        elif c in "(),":
            tokens.append(_Token(c, c, None, column))
            i += 1
        elif c in "'\"":
            end, chars = i + 1, []
            while True:
                if end >= len(text):
                    what = "text value" if c == "'" else "key"
                    raise FilterError(text, column, f"this {what} has no closing {c}")
                if text[end] == c:
                    if end + 1 < len(text) and text[end + 1] == c:
                        chars.append(c)
                        end += 2
                        continue
                    break
                if text[end] == "\x00":
                    raise FilterError(
                        text, end + 1, "a NUL character (\\0) cannot be stored or compared in PostgreSQL"
                    )
                chars.append(text[end])
                end += 1
            tokens.append(_Token("string" if c == "'" else "key", text[i : end + 1], "".join(chars), column))
            i = end + 1
        elif c in _OPERATOR_CHARS:
            end = i
            while end < len(text) and text[end] in _OPERATOR_CHARS:
                end += 1
            op = text[i:end]
            if op == "<>":
                op = "!="
            if op not in OPERATORS:
                raise FilterError(
                    text, column, f"unknown operator {op!r}; use one of {' '.join(OPERATORS)} or in (...)"
                )
            tokens.append(_Token("op", text[i:end], op, column))
            i = end
        elif c.isdigit() or (c == "-" and text[i + 1 : i + 2].isdigit()):
            i = _number_or_date(text, i, tokens)
        elif _NAME.match(text, i):
            word = _NAME.match(text, i).group()
            kind = "word" if word.lower() in _WORDS else "name"
            tokens.append(_Token(kind, word, word.lower() if kind == "word" else word, column))
            i += len(word)
        elif c == ".":
            tokens.append(_Token(".", c, None, column))
            i += 1
        else:
            raise FilterError(text, column, f"unexpected character {c!r}")
    tokens.append(_Token("end", "", None, len(text) + 1))
    return tokens


def _number_or_date(text: str, i: int, tokens: list[_Token]) -> int:
    column = i + 1
    date = _DATE.match(text, i)
    if date:
        try:
            tokens.append(_Token("date", date.group(), dt.date.fromisoformat(date.group()), column))
        except ValueError:
            raise FilterError(text, column, f"{date.group()} is not a date (YYYY-MM-DD)") from None
        return date.end()
    number = NUMBER_PATTERN.match(text, i)
    if not number:
        word = re.match(r"[^\s(),=!<>~']+", text[i:]).group()
        raise FilterError(text, column, f"{word!r} is not a number or a date (YYYY-MM-DD); quote text: '{word}'")
    try:
        value = Decimal(number.group())
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        raise FilterError(text, column, f"{number.group()!r} is not a number") from None
    if abs(value.adjusted()) > MAX_EXPONENT and value != 0:
        raise FilterError(text, column, f"{number.group()} is out of range (at most 1e{MAX_EXPONENT})")
    tokens.append(_Token("number", number.group(), value, column))
    return number.end()


# -- parser -----------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, token: _Token, reason: str):
        raise FilterError(self.text, token.column, reason)

    def found(self, token: _Token) -> str:
        return "the end of the filter" if token.kind == "end" else repr(token.text)

    def parse(self) -> Filter:
        if self.peek().kind == "end":
            self.fail(self.peek(), "the filter is empty")
        tree = self.disjunction()
        token = self.peek()
        if token.kind != "end":
            self.fail(token, f"expected 'and', 'or' or the end of the filter, found {self.found(token)}")
        return tree

    def disjunction(self) -> Filter:
        parts = [self.conjunction()]
        while self.peek().kind == "word" and self.peek().value == "or":
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Filter:
        parts = [self.primary()]
        while self.peek().kind == "word" and self.peek().value == "and":
            self.take()
            parts.append(self.primary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def primary(self) -> Filter:
        token = self.peek()
        if token.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self.fail(token, f"more than {MAX_DEPTH} nested parentheses")
            self.take()
            tree = self.disjunction()
            if self.peek().kind != ")":
                self.fail(
                    self.peek(),
                    f"expected ')' to close the '(' at column {token.column}, found {self.found(self.peek())}",
                )
            self.take()
            self.depth -= 1
            return tree
        return self.comparison()

    def key(self) -> tuple[tuple[str, ...], int]:
        first = self.peek()
        path = []
        while True:
            token = self.take()
            if token.kind in ("name", "key"):
                path.append(token.value)
            elif token.kind == "word" and token.value in ("true", "false", "null"):
                path.append(token.text)  # a key named `true` is a name like any other
            else:
                self.fail(token, f"expected a metadata key, found {self.found(token)}")
            if self.peek().kind != ".":
                break
            self.take()
        if any(part == "" for part in path):
            self.fail(first, "a key cannot be empty")
        return tuple(path), first.column

    def comparison(self) -> Filter:
        path, column = self.key()
        token = self.take()
        if token.kind == "word" and token.value == "in":
            return self.any_of(path, column)
        if token.kind != "op":
            if token.kind == "name":
                self.fail(token, f"unknown operator {token.text!r}; use one of {' '.join(OPERATORS)} or in (...)")
            self.fail(
                token, f"expected an operator ({' '.join(OPERATORS)} or in) after the key, found {self.found(token)}"
            )
        value_token = self.peek()
        value = self.value()
        kind = value_type(value)
        if token.value in ORDERING and kind in ("boolean", "null"):
            self.fail(value_token, f"{value_token.text} can only be compared with = or !=, not {token.value}")
        return Comparison(path, token.value, value, column)

    def any_of(self, path: tuple[str, ...], column: int) -> AnyOf:
        if self.peek().kind != "(":
            self.fail(self.peek(), f"expected '(' after in, found {self.found(self.peek())}")
        self.take()
        values, first = [], None
        while True:
            token = self.peek()
            value = self.value()
            if first is None:
                first = (token, value_type(value))
            elif value_type(value) != first[1]:
                self.fail(
                    token,
                    f"in (...) mixes {first[1]} (column {first[0].column}) with {value_type(value)}: "
                    "a number is never compared with text",
                )
            values.append(value)
            separator = self.take()
            if separator.kind == ")":
                return AnyOf(path, tuple(values), column)
            if separator.kind != ",":
                self.fail(separator, f"expected ',' or ')' in the list, found {self.found(separator)}")

    def value(self) -> Value:
        token = self.take()
        if token.kind in ("string", "number", "date"):
            return token.value
        if token.kind == "word" and token.value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.value]
        if token.kind == "key":
            self.fail(
                token, f"expected a value, found the key {token.text}; text values take single quotes: '{token.value}'"
            )
        if token.kind == "name":
            self.fail(token, f"expected a value, found {token.text!r}; quote text: '{token.text}'")
        self.fail(
            token, f"expected a value (a 'quoted text', number, date, true, false or null), found {self.found(token)}"
        )


def parse_filter(text: str) -> Filter:
    """Parses a filter (see the module's docstring) into a tree of `Comparison`, `AnyOf`, `And`, `Or`.

    Raises:
        FilterError: it does not parse, or cannot run (the message shows the column).
    """
    if not isinstance(text, str):
        raise TypeError(f"a filter is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FilterError(text[:80], 1, f"the filter has {len(text)} characters; at most {MAX_LENGTH}")
    return _Parser(text).parse()


def parse_key(text: str) -> tuple[str, ...]:
    """A key or dotted path alone (`year`, `author.country`, `"my key"`), as in a filter.

    Raises:
        FilterError: it is not one key.
    """
    if not isinstance(text, str):
        raise TypeError(f"a key is text, got {type(text).__name__}")
    parser = _Parser(text)
    if parser.peek().kind == "end":
        parser.fail(parser.peek(), "the key is empty")
    path, _ = parser.key()
    if parser.peek().kind != "end":
        parser.fail(parser.peek(), f"expected the end of the key, found {parser.found(parser.peek())}")
    return path
