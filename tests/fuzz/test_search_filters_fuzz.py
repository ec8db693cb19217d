"""Properties of the filter language, against the real embedded PostgreSQL (`pg_uri`).

1. The compiled SQL answers what a plain Python reading of the documented rules answers, for random
   metadata and random filters (every operator, nested keys, numbers, text, dates, booleans, null,
   values of the wrong type and missing keys).
2. Any text at all either parses or is refused with a `FilterError` pointing into it; what parses
   runs without a database error.
"""

import datetime as dt
import json
import re
from decimal import Decimal

import psycopg
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from psycopg import sql

from embedpipe.vectorstore.filter_build import quote_key, quote_text
from embedpipe.vectorstore.filter_sql import compile_filter
from embedpipe.vectorstore.filters import FilterError, parse_filter

ISO_DATE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([T ]|$)")
KEYS = [("a",), ("b",), ("o", "x"), ('we\'ird "key"',)]
# small pools, so that rows often hold exactly the value a filter names (equality is where bugs hide)
text = st.sampled_from(["", "a", "b", "Z", "ä", "a'b", 'q"', "\\", "$1", "😀"]) | st.text(
    alphabet=st.sampled_from(["a", "b", "Z", "ä", "'", '"', "\\", " ", "$", "😀"]), max_size=3
)
dates = st.dates(dt.date(2023, 12, 31), dt.date(2024, 1, 2))
date_strings = st.one_of(
    dates.map(dt.date.isoformat),
    st.tuples(dates, st.sampled_from(["T10:00:00Z", " 23:59", "x", "T"])).map(lambda d: d[0].isoformat() + d[1]),
    st.sampled_from(["2024-13-01", "2024-1-1", "May 2024", "20240101"]),
)
numbers = st.integers(-2, 2) | st.sampled_from([0.5, -0.0, 1e20, 2.5e-7, 10**22 + 1, 3.0])
scalars = st.none() | st.booleans() | numbers | text | date_strings
values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.sampled_from(["x", "y"]), scalars, max_size=2)
documents = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "o", 'we\'ird "key"']), values, min_size=1, max_size=4),
    min_size=1,
    max_size=12,
)

literal_kinds = {
    "number": numbers.map(lambda n: Decimal(repr(n)) if isinstance(n, float) else Decimal(n)),
    "text": text,
    "date": dates,
    "boolean": st.booleans(),
    "null": st.none(),
}


@st.composite
def comparisons(draw):
    path = draw(st.sampled_from(KEYS))
    kind = draw(st.sampled_from(list(literal_kinds)))
    ops = ["=", "!="] if kind in ("boolean", "null") else ["=", "!=", "<", "<=", ">", ">=", "in"]
    op = draw(st.sampled_from(ops))
    if op == "in":
        return ("in", path, tuple(draw(st.lists(literal_kinds[kind], min_size=1, max_size=3))))
    return ("cmp", path, op, draw(literal_kinds[kind]))


filters = st.recursive(
    comparisons(),
    lambda inner: st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
    max_leaves=5,
)


def render_literal(value) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return quote_text(value)


def render(tree) -> str:
    if tree[0] in ("and", "or"):
        return "(" + f" {tree[0]} ".join(render(part) for part in tree[1]) + ")"
    key = ".".join(part if part.isalnum() else quote_key(part) for part in tree[1])
    if tree[0] == "in":
        return f"{key} in ({', '.join(render_literal(v) for v in tree[2])})"
    return f"{key} {tree[2]} {render_literal(tree[3])}"


# -- the documented rules, in Python --------------------------------------------------------------
MISSING = object()


def at(document, path):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return MISSING
        document = document[key]
    return document


def typed(value, literal):
    """The row's value as the literal's type, or None when it has another type (no match)."""
    if isinstance(literal, bool):
        return value if isinstance(value, bool) else None
    if isinstance(literal, Decimal):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value) if ok else None
    if isinstance(literal, dt.date):
        return value[:10] if isinstance(value, str) and ISO_DATE.match(value) else None
    return value if isinstance(value, str) else None


def holds(tree, document) -> bool:
    if tree[0] == "and":
        return all(holds(part, document) for part in tree[1])
    if tree[0] == "or":
        return any(holds(part, document) for part in tree[1])
    value = at(document, tree[1])
    if tree[0] == "in":
        return any(holds(("cmp", tree[1], "=", literal), document) for literal in tree[2])
    _, _, op, literal = tree
    if literal is None:
        return value is None if op == "=" else value is not MISSING and value is not None
    mine = typed(value, literal) if value is not MISSING else None
    if mine is None:
        return False
    theirs = literal.isoformat() if isinstance(literal, dt.date) else literal
    return {
        "=": mine == theirs,
        "!=": mine != theirs,
        "<": mine < theirs,
        "<=": mine <= theirs,
        ">": mine > theirs,
        ">=": mine >= theirs,
    }[op]


@pytest.fixture(scope="module")
def conn(pg_uri):
    with psycopg.connect(pg_uri, autocommit=True) as connection:
        yield connection


def matching_rows(conn, documents, text) -> list[int]:
    where, params = compile_filter(parse_filter(text))
    query = (
        sql.SQL("SELECT (n - 1)::int FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(metadata, n) WHERE ")
        + where
        + sql.SQL(" ORDER BY n")
    )
    return [row[0] for row in conn.execute(query, [json.dumps(documents), *params]).fetchall()]


def leaves(tree) -> list[tuple]:
    """(path, literal) of every comparison in the filter."""
    if tree[0] in ("and", "or"):
        return [leaf for part in tree[1] for leaf in leaves(part)]
    return [(tree[1], v) for v in tree[2]] if tree[0] == "in" else [(tree[1], tree[3])]


def as_json(literal):
    """A row value equal to a literal of the filter (a date as its text)."""
    if isinstance(literal, Decimal):
        return int(literal) if literal == literal.to_integral_value() else float(literal)
    if isinstance(literal, dt.date):
        return literal.isoformat()
    return literal


@st.composite
def cases(draw):
    """A filter, and rows that often hold the filter's own keys and literals (or near them), else anything."""
    tree = draw(filters)
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        row = draw(st.dictionaries(st.sampled_from(["a", "b", "o", 'we\'ird "key"']), values, max_size=2))
        for path, literal in draw(st.lists(st.sampled_from(leaves(tree)), max_size=3)):
            same = as_json(literal)
            near = [same]
            if isinstance(same, str):
                near += [same + "T08:00:00", same + "x", "x" + same, same[:-1]]
            elif isinstance(same, (int, float)) and not isinstance(same, bool):
                near += [same + 1, same - 1, float(same), str(same)]
            else:
                near += [str(same).lower(), None if same is not None else False]
            value = draw(st.sampled_from([*near, same]) if draw(st.integers(0, 4)) else values)
            if len(path) == 1:
                row[path[0]] = value
            else:
                row[path[0]] = {**(row[path[0]] if isinstance(row.get(path[0]), dict) else {}), path[1]: value}
        rows.append(row)
    return rows, tree


@given(case=cases())
def test_postgres_answers_what_the_documented_rules_answer(conn, case):
    documents, tree = case
    text = render(tree)
    expected = [i for i, document in enumerate(documents) if holds(tree, document)]
    event("some rows match" if expected else "no row matches")
    assert matching_rows(conn, documents, text) == expected, text


@given(text=st.text(alphabet=st.sampled_from(list("ab.()'\",=<>!in 0123456789-etrufalsnd\x00")), max_size=30))
def test_any_text_parses_or_is_refused_with_its_column(conn, text):
    try:
        parse_filter(text)
    except FilterError as err:
        assert 1 <= err.column <= len(text) + 1
        assert str(err).splitlines()[0].startswith(f"filter error at column {err.column}:")
        return
    matching_rows(conn, [{"a": 1, "b": "x"}, {"in": None}], text)  # runs: no database error
