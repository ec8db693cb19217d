"""The filter language (`vectorstore.filters`), its SQL (`filter_sql`), its indexes (`metadata_index`) and the
filtered HNSW scan (`scan`): parsed offline, run against the real embedded PostgreSQL (the `pg_uri` fixture)."""

import datetime as dt
import json
import uuid
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from psycopg import sql

from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
from embedpipe.vectorstore.filter_build import quote_key, quote_text, where_filter
from embedpipe.vectorstore.filter_sql import compile_filter
from embedpipe.vectorstore.filters import (
    And,
    AnyOf,
    Comparison,
    FilterError,
    Or,
    parse_filter,
)
from embedpipe.vectorstore.metadata_index import parse_field
from embedpipe.vectorstore.scan import ScanSettings
from embedpipe.vectorstore.search import search_vector


def unit_vectors(n, dim=8, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def table():
    return f"f_{uuid.uuid4().hex[:10]}"


# -- the language, offline -------------------------------------------------------------------------
def test_parse_builds_a_typed_tree_with_and_binding_tighter_than_or():
    tree = parse_filter("a = 1 or b.c >= 2024-05-01 and d in ('x', 'y''s') AND e <> null")
    assert tree == Or(
        (
            Comparison(("a",), "=", Decimal("1"), 1),
            And(
                (
                    Comparison(("b", "c"), ">=", dt.date(2024, 5, 1), 10),
                    AnyOf(("d",), ("x", "y's"), 32),
                    Comparison(("e",), "!=", None, 55),
                )
            ),
        )
    )
    assert parse_filter('"my key".x = -2.5e3') == Comparison(("my key", "x"), "=", Decimal("-2.5e3"), 1)
    assert parse_filter("(x = true)") == Comparison(("x",), "=", True, 2)
    assert parse_filter("path = 'C:\\dir'").value == "C:\\dir"  # a backslash is an ordinary character


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("year >> 2000", 6, "unknown operator '>>'"),
        ("year == 2000", 6, "unknown operator '=='"),
        ("year like 'x'", 6, "unknown operator 'like'"),
        ("title = 'unclosed", 9, "no closing '"),
        ('"unclosed = 1', 1, 'no closing "'),
        ("year in (2000, '2001')", 16, "mixes number (column 10) with text"),
        ("year in (2000, 2001-01-01)", 16, "mixes number (column 10) with date"),
        ("(year = 1 or x = 2", 19, "expected ')' to close the '(' at column 1"),
        ("year = 1 and", 13, "expected a metadata key, found the end"),
        ("year = 1 x = 2", 10, "expected 'and', 'or' or the end"),
        ("source = pubmed", 10, "quote text: 'pubmed'"),
        ('source = "pubmed"', 10, "text values take single quotes"),
        ("year > 20x0", 8, "'20x0' is not a number"),
        ("d < 2024-02-30", 5, "2024-02-30 is not a date"),
        ("ok > true", 6, "true can only be compared with = or !="),
        ("ok <= null", 7, "null can only be compared with = or !="),
        ("x = 'a\x00b'", 7, "NUL character"),
        ("x\x00 = 1", 2, "NUL character"),
        ("x = 1e999", 5, "out of range"),
        ("   ", 4, "the filter is empty"),
        ("x = 1 or ()", 11, "expected a metadata key"),
        ("x in 1", 6, "expected '(' after in"),
        ("x = 'a' ; DROP TABLE t", 9, "unexpected character ';'"),
    ],
)
def test_bad_filters_name_the_column_and_point_at_it(text, column, reason):
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    err = caught.value
    assert err.column == column, str(err)
    assert reason in str(err)
    message, shown, caret = str(err).split("\n")
    assert message.startswith(f"filter error at column {column}:")
    assert len(shown) == len(text) + 2 and caret == " " * (column + 1) + "^"  # the caret under the column


def test_deep_nesting_and_huge_filters_are_refused_not_a_recursion_error():
    with pytest.raises(FilterError, match="nested parentheses"):
        parse_filter("(" * 100 + "x = 1" + ")" * 100)
    with pytest.raises(FilterError, match="at most 10000"):
        parse_filter("x = 1 or " * 2000 + "x = 1")


def test_compiled_sql_holds_no_key_or_value_only_placeholders():
    key, value = "'); DROP TABLE t; --", "x'); DELETE FROM t; --"
    tree = parse_filter(f"{quote_key(key)} = {quote_text(value)} or {quote_key(key)} > {quote_text(value)}")
    where, params = compile_filter(tree)
    text = where.as_string(None)
    assert "DROP" not in text and "DELETE" not in text and text.count("%s") == len(params)
    assert json.loads(params[0]) == {key: value} and params[1:] == [key, key, value]


def test_old_where_pairs_map_onto_the_language():
    assert where_filter({"group": "odd"}) == Comparison(("group",), "=", "odd")
    assert where_filter({"n": "11", "a.b": 2}) == And(
        (
            Or((Comparison(("n",), "=", "11"), Comparison(("n",), "=", Decimal("11")))),
            Or((Comparison(("a.b",), "=", "2"), Comparison(("a.b",), "=", Decimal("2")))),
        )
    )
    assert where_filter({}) is None
    with pytest.raises(FilterError, match="NUL"):
        where_filter({"k": "a\x00"})


def test_filter_fields_are_checked_with_the_settings():
    assert parse_field("author.country:text") == (("author", "country"), "text")
    assert parse_field('"a:b".c:date') == (("a:b", "c"), "date")
    for bad in ("year", "year:float", "year x:number", ":number"):
        with pytest.raises(ValueError, match="filter field"):
            IndexSettings(filter_fields=(bad,)).check()
    with pytest.raises(ValueError, match="metadata_index"):
        IndexSettings(metadata_index="btree").check()


def test_a_bad_filter_is_refused_before_connecting():
    with pytest.raises(FilterError, match="column 6"):
        search_vector(lambda: pytest.fail("must not connect"), np.ones(4), table="t", filter="year >> 1")


# -- against PostgreSQL --------------------------------------------------------------------------
ROWS = {
    "r1": {
        "year": 2019,
        "source": "pubmed",
        "published": "2024-04-30",
        "reviewed": True,
        "score": 0.5,
        "author": {"country": "US"},
        "note": None,
    },
    "r2": {
        "year": 2020,
        "source": "pmc",
        "published": "2024-05-01T10:00:00Z",
        "reviewed": False,
        "score": 100,
        "author": {"country": "JP"},
    },
    "r3": {"year": 2021.0, "source": "arxiv", "published": "2024-05-02", "tags": ["pubmed"], "author": "anon"},
    "r4": {"year": "n/a", "source": "pubmed", "published": "May 2024", "reviewed": "true"},
    "r5": {"year": "2020", "published": "2024-13-01", "score": "100"},
    "r6": {},
    "r7": {"year": 100000000000000000000001, "source": "Zeta", "note": "x"},
    "r8": {"year": -1.5e3, "source": "ärzte", "published": "2023-12-31 23:59"},
}


@pytest.fixture(scope="module")
def filtered_table(pg_uri):
    name = f"f_{uuid.uuid4().hex[:10]}"
    ids = list(ROWS)
    batch = VectorBatch(ids, unit_vectors(len(ids), 4), [f"text {i}" for i in ids], [json.dumps(ROWS[i]) for i in ids])
    PgVectorWriter(pg_uri, name, index=IndexSettings(kind="none")).write(batch)
    return name


def matching(pg_uri, table, text):
    return sorted(h.id for h in search_vector(pg_uri, np.ones(4), table=table, k=50, filter=text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("year = 2020", ["r2"]),  # the text "2020" of r5 is not the number 2020
        ("year = 2021", ["r3"]),  # 2021.0 is the number 2021
        ("year != 2020", ["r1", "r3", "r7", "r8"]),  # "n/a", "2020" and a missing year match neither = nor !=
        ("year <> 2020", ["r1", "r3", "r7", "r8"]),
        ("year < 2020", ["r1", "r8"]),
        ("year <= 2020", ["r1", "r2", "r8"]),
        ("year > 2020", ["r3", "r7"]),
        ("year >= 2020", ["r2", "r3", "r7"]),
        ("year > 100000000000000000000000", ["r7"]),  # exact: a float would see 1e23 == 1e23 + 1
        ("year >= -1500 and year < 0", ["r8"]),
        ("score > 99.5", ["r2"]),
        ("year = '2020'", ["r5"]),
        ("published < 2024-05-01", ["r1", "r8"]),  # "2024-13-01" and "May 2024" are not dates
        ("published >= 2024-05-01", ["r2", "r3"]),  # a timestamp compares by its date
        ("published = 2024-05-01", ["r2"]),
        ("published != 2024-05-01", ["r1", "r3", "r8"]),
        ("published in (2024-04-30, 2024-05-02)", ["r1", "r3"]),
        ("published > '2024-05-01'", ["r2", "r3", "r4", "r5"]),  # text in code-point order: any string
        ("source = 'pubmed'", ["r1", "r4"]),  # not r3's tags array
        ("source in ('pmc', 'arxiv', 'nothing')", ["r2", "r3"]),
        ("source < 'a'", ["r7"]),  # code-point order: 'Z' < 'a' < 'ä'
        ("source > 'pubmed'", ["r8"]),
        ("reviewed = true", ["r1"]),  # not the text "true"
        ("reviewed = false", ["r2"]),
        ("reviewed != true", ["r2"]),
        ("note = null", ["r1"]),
        ("note != null", ["r7"]),
        ("author.country = 'JP'", ["r2"]),
        ("author.country != 'JP'", ["r1"]),  # r3's author is text, not an object
        ("year in (2019, 2021)", ["r1", "r3"]),
        ("year = 2019 or year = 2021 and source = 'pmc'", ["r1"]),
        ("(year = 2019 or year = 2021) and source = 'arxiv'", ["r3"]),
        ("(year = 2019 or (source = 'pmc' and reviewed = false)) and author.country in ('US', 'JP')", ["r1", "r2"]),
        ("missing = 1 or missing != 1", []),
    ],
)
def test_every_operator_against_postgres(pg_uri, filtered_table, text, expected):
    assert matching(pg_uri, filtered_table, text) == sorted(expected)


def test_filter_and_old_where_combine(pg_uri, filtered_table):
    hits = search_vector(
        pg_uri, np.ones(4), table=filtered_table, k=50, where={"source": "pubmed"}, filter="year = 2019"
    )
    assert [h.id for h in hits] == ["r1"]
    as_text = search_vector(pg_uri, np.ones(4), table=filtered_table, k=50, where={"year": "2020"})
    assert sorted(h.id for h in as_text) == ["r2", "r5"]  # as before: the number and the text


INJECTIONS = [
    "'); DROP TABLE {table}; --",
    "x' OR '1'='1",
    'a"b""c',
    "back\\slash\\",
    "\\'; DROP TABLE {table}; --",
    "$1",
    "%s %(x)s {} {0}",
    "ends with '",
    'jsonb: {"a": 1}',
]


def test_injection_in_keys_and_values_is_data_never_sql(pg_uri, table):
    texts = [t.replace("{table}", table) for t in INJECTIONS]
    metadata = [json.dumps({text: text, "plain": text}) for text in texts]
    batch = VectorBatch([f"i{n}" for n in range(len(texts))], unit_vectors(len(texts), 4), texts, metadata)
    PgVectorWriter(pg_uri, table).write(batch)
    for n, text in enumerate(texts):
        as_key = f"{quote_key(text)} = {quote_text(text)}"
        assert matching(pg_uri, table, as_key) == [f"i{n}"], as_key
        assert matching(pg_uri, table, f"plain = {quote_text(text)}") == [f"i{n}"]
        assert matching(pg_uri, table, f"plain >= {quote_text(text)} and plain <= {quote_text(text)}") == [f"i{n}"]
        assert matching(pg_uri, table, f"plain in ({quote_text(text)}, 'none')") == [f"i{n}"]
        assert search_vector(pg_uri, np.ones(4), table=table, k=50, where={text: text})[0].id == f"i{n}"
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0] == len(
            texts
        )


# -- indexes and plans ---------------------------------------------------------------------------
def plan_of(pg_uri, table, text, *, order_by_vector=False, dim=4):
    where, params = compile_filter(parse_filter(text))
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT id FROM {} WHERE ").format(sql.Identifier(table)) + where
    if order_by_vector:
        query += sql.SQL(" ORDER BY embedding <=> %s::vector LIMIT 10")
        params = [*params, "[" + ",".join(["0.5"] * dim) + "]"]
    with psycopg.connect(pg_uri) as conn:
        return json.dumps(conn.execute(query, params).fetchone()[0])


def test_explain_shows_the_indexes_serving_a_selective_filter(pg_uri, table):
    n = 20_000
    metadata = [
        json.dumps({"bucket": i % 1000, "year": 1000 + i % 2000, "lang": "ja" if i % 7 else "en"}) for i in range(n)
    ]
    batch = VectorBatch([f"d{i}" for i in range(n)], unit_vectors(n, 4), [""] * n, metadata)
    settings = IndexSettings(kind="none", filter_fields=("year:number",))
    PgVectorWriter(pg_uri, table, index=settings).write(batch)
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        names = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))]
    gin = f"{table}_metadata_gin"
    (field,) = [name for name in names if name.startswith(f"{table}_f_year_")]
    assert gin in names
    equality = plan_of(pg_uri, table, "bucket = 7")  # 20 of 20,000 rows
    assert "Bitmap Index Scan" in equality and gin in equality, equality
    assert gin in plan_of(pg_uri, table, "bucket in (7, 8) and lang = 'en'")
    assert gin in plan_of(pg_uri, table, "bucket = 7", order_by_vector=True)  # the search's shape (no HNSW here)
    ranged = plan_of(pg_uri, table, "year >= 1100 and year < 1102")  # a declared field
    assert field in ranged, ranged
    assert gin not in plan_of(pg_uri, table, "lang = 'ja'")  # 6 of 7 rows: a sequential scan is cheaper
    found = search_vector(pg_uri, np.ones(4), table=table, k=50, filter="bucket = 7 and year < 1100")
    assert sorted(h.id for h in found) == sorted(f"d{i}" for i in range(n) if i % 1000 == 7 and 1000 + i % 2000 < 1100)


def test_iterative_scan_returns_k_rows_for_a_selective_filter(pg_uri, table):
    n = 3000
    vectors = unit_vectors(n, 8, seed=3)
    metadata = [json.dumps({"bucket": i % 100}) for i in range(n)]  # bucket < 10: 10 % of the rows
    PgVectorWriter(pg_uri, table, index=IndexSettings(m=8, ef_construction=32)).write(
        VectorBatch([f"d{i}" for i in range(n)], vectors, [""] * n, metadata)
    )
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    assert f"{table}_embedding_hnsw" in plan_of(pg_uri, table, "bucket < 10", order_by_vector=True, dim=8)
    query = unit_vectors(1, 8, seed=4)[0]
    exact = sorted((i for i in range(n) if i % 100 < 10), key=lambda i: -vectors[i] @ query)[:10]
    scans = {
        kind: search_vector(
            pg_uri,
            query,
            table=table,
            k=10,
            filter="bucket < 10",
            scan=ScanSettings(ef_search=20, iterative_scan=kind),
        )
        for kind in ("off", "relaxed_order", "strict_order")
    }
    assert len(scans["off"]) < 10  # post-filtering 20 candidates keeps about 2 of them
    for kind in ("relaxed_order", "strict_order"):
        hits = scans[kind]
        assert len(hits) == 10 and len({h.id for h in hits} & {f"d{i}" for i in exact}) >= 9, kind
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    default = search_vector(pg_uri, query, table=table, k=10, filter="bucket < 10")  # iterative, ef_search 200
    assert [h.id for h in default] == [f"d{i}" for i in exact]
    with pytest.raises(ValueError, match="filtered_ef_search 5000 is above"):
        search_vector(pg_uri, query, table=table, scan=ScanSettings(filtered_ef_search=5000))
    with pytest.raises(ValueError, match="iterative_scan"):
        search_vector(pg_uri, query, table=table, scan=ScanSettings(iterative_scan="sometimes"))


def test_embedpipe_search_refuses_a_bad_filter_before_connecting_or_loading(capsys):
    from embedpipe import cli

    unreachable = "postgresql://nobody@/nowhere?host=/nonexistent-socket-dir"
    status = cli.main(["search", "q", "--db", unreachable, "--filter", "year > 2000 and title = 'open"])
    assert status == cli.exits.BAD_INPUT
    err = capsys.readouterr().err
    assert "filter error at column 25: this text value has no closing '" in err
    assert err.splitlines()[-1] == "  " + " " * 24 + "^" and "Traceback" not in err
