"""Strict JSON for one input line, and the values that the outputs (Parquet, PostgreSQL) can store.

Python's `json` accepts more than JSON and more than our outputs can hold, and what it lets through fails
hours later, at upload, with an error naming no row. This module turns each such case into a message
for the line it is on:

- `NaN`, `Infinity`, `-Infinity` (not JSON; PostgreSQL `jsonb` cannot store them) and numbers too large
  for a 64-bit float (`1e400`, which Python reads as infinity);
- numbers of more than `MAX_NUMBER_CHARS` characters (Python refuses to read integers of more than 4,300
  digits, and nothing downstream needs such numbers);
- nesting deeper than `MAX_DEPTH` levels (deep nesting overflows parsers, Python's among them);
- strings with a NUL character (PostgreSQL `text` and `jsonb` cannot hold `\\u0000`) or a lone surrogate
  (`"\\ud800"`: half of a UTF-16 pair, not Unicode text; Parquet and PostgreSQL take only valid UTF-8).

Example:
    >>> value = loads_line('{"_id": "d1", "metadata": {"score": NaN, "tags": ["a", "b\\\\u0000"]}}')
    >>> [path for path, _ in find_unstorable(value["metadata"], "metadata")]
    ['metadata.score', 'metadata.tags[1]']
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

#: Deepest nesting of arrays and objects accepted in a line (the line's own object is level 1).
MAX_DEPTH = 64
#: Longest number literal accepted, in characters.
MAX_NUMBER_CHARS = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class LineError(ValueError):
    """A line that cannot be read as JSON at all; the message says why and what would be right."""


@dataclass(frozen=True)
class Unstorable:
    """A JSON number that was read but cannot be stored; it stands where the number was.

    Attributes:
        literal: The number as written (cut short when long).
        reason: Why it cannot be stored and what to write instead.
    """

    literal: str
    reason: str


def loads_line(text: str) -> object:
    """Reads one line of JSON; numbers that cannot be stored become `Unstorable` in place.

    Raises:
        LineError: the line is not JSON, or nests deeper than `MAX_DEPTH`.
    """
    # Counting brackets is fast; only a line with many of them is scanned for its real depth.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        depth = nesting_depth(text)
        if depth > MAX_DEPTH:
            raise LineError(f"nested {depth:,} levels deep; at most {MAX_DEPTH} levels of arrays and objects")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as err:
        raise LineError(f"invalid JSON: {err.msg} at column {err.colno}") from None
    except RecursionError:  # not reached after the depth check; kept so that no traceback can escape
        raise LineError(f"nested too deeply; at most {MAX_DEPTH} levels of arrays and objects") from None


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count)."""
    brackets = _BRACKET.findall(_JSON_STRING.sub('""', text))
    steps = (1 if b in "[{" else -1 for b in brackets)
    return max(accumulate(steps, initial=0))


def string_problem(value: str) -> str | None:
    """Why a string cannot be stored (a NUL character, a lone surrogate), or None when it can."""
    if "\x00" not in value:
        try:
            value.encode("utf-8")  # in C: several times faster than searching for surrogates with a regex
            return None
        except UnicodeEncodeError:
            pass
    bad = _BAD_CHAR.search(value)
    if bad is None:  # not reached: encode fails only on a surrogate
        return None
    at = bad.start() + 1
    if bad.group() == "\x00":
        return f"contains a NUL character (\\u0000) at character {at:,}; PostgreSQL cannot store it, remove it"
    return (
        f"contains a lone surrogate (\\u{ord(bad.group()):04x}) at character {at:,}: half of a UTF-16 pair, "
        "not valid Unicode; write the whole pair or the character itself"
    )


def find_unstorable(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Yields (field path, what is wrong) for every value under `value` that cannot be stored.

    Paths read like `metadata.tags[2]`; keys that are not plain names are quoted (`metadata["a b"]`).
    Walks without recursion, so its depth is bounded only by what `loads_line` let through.
    """
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, Unstorable):
            yield where, item.reason
        elif isinstance(item, str):
            problem = string_problem(item)
            if problem:
                yield where, problem
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                problem = string_problem(key)
                if problem:
                    yield where, f"key {_quoted(key)} {problem}"
                    continue
                name = f".{key}" if _KEY.match(key) else f"[{_quoted(key)}]"
                children.append((child, where + name))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{where}[{i}]") for i, child in enumerate(item)]))


def short(value: object, limit: int = 40) -> str:
    """`repr` of a value cut to about `limit` characters, for messages (ids and cells may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value)):,} characters)"


def _quoted(key: str) -> str:
    text = json.dumps(key)  # ASCII only: a NUL or surrogate is shown as its escape
    return text if len(text) <= 40 else text[:40] + '..."'


def _constant(name: str) -> Unstorable:
    return Unstorable(name, f"{name} is not a JSON number and PostgreSQL cannot store it; write null or a string")


def _too_long(literal: str) -> Unstorable:
    return Unstorable(
        literal[:20],
        f"a number of {len(literal):,} characters ({literal[:20]}...); at most {MAX_NUMBER_CHARS}: "
        "write long numbers as strings",
    )


def _integer(literal: str) -> int | Unstorable:
    if len(literal) > MAX_NUMBER_CHARS:
        return _too_long(literal)
    return int(literal)


def _float(literal: str) -> float | Unstorable:
    if len(literal) > MAX_NUMBER_CHARS:
        return _too_long(literal)
    number = float(literal)
    if not math.isfinite(number):
        return Unstorable(
            literal, f"{literal} is out of the range of a 64-bit float; write a smaller number or a string"
        )
    return number


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_int=_integer, parse_float=_float)  # one, not one per line
