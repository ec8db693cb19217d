"""The pgvector writer and search, against the real embedded PostgreSQL (the `pg_uri` session fixture)."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import psycopg
import pytest

from embedpipe.validation import DataValidationError
from embedpipe.vectorstore import IdentifierError, IndexSettings, PgVectorWriter, VectorBatch, write_parquet_vectors
from embedpipe.vectorstore.identifiers import check_identifier, table_identifier
from embedpipe.vectorstore.search import search_vector


def unit_vectors(n, dim=8, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_batch(n, dim=8, seed=0, prefix="d", **kwargs):
    metadata = kwargs.pop(
        "metadata", [json.dumps({"group": "even" if i % 2 == 0 else "odd", "n": i}) for i in range(n)]
    )
    return VectorBatch(
        [f"{prefix}{i}" for i in range(n)],
        unit_vectors(n, dim, seed),
        [f"text {i}" for i in range(n)],
        metadata,
        **kwargs,
    )


@pytest.fixture
def table():
    return f"t_{uuid.uuid4().hex[:10]}"


def rows_of(uri, table):
    with psycopg.connect(uri) as conn:
        return conn.execute(f'SELECT id, content, metadata FROM "{table}" ORDER BY id').fetchall()


def table_exists(uri, table):
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


@pytest.mark.parametrize("name", ["x; DROP TABLE y", 'a"b', "", "1abc", "a b", "a.b.c", "x" * 64, "t--"])
def test_bad_identifiers_are_refused_before_any_sql(name):
    with pytest.raises(IdentifierError):
        table_identifier(name)
    with pytest.raises(IdentifierError):
        PgVectorWriter(lambda: pytest.fail("must not connect"), name)


def test_good_identifiers():
    assert check_identifier("scifact_vectors") == "scifact_vectors"
    assert table_identifier("public.embeddings").as_string() == '"public"."embeddings"'


def test_write_creates_table_with_beam_schema_and_hnsw_index(pg_uri, table):
    result = PgVectorWriter(pg_uri, table).write(make_batch(20))
    assert (result.rows, result.inserted, result.created_table) == (20, 20, True)
    assert result.index_built == f"{table}_embedding_hnsw"
    with psycopg.connect(pg_uri) as conn:
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 ORDER BY attnum",
            (table,),
        ).fetchall()
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{table}_embedding_hnsw",)
        ).fetchone()[0]
    # Beam's four columns, then the generated full-text column (issue 17: hybrid search)
    assert columns == [
        ("id", "text"),
        ("embedding", "vector(8)"),
        ("content", "text"),
        ("metadata", "jsonb"),
        ("content_tsv", "tsvector"),
    ]
    assert "hnsw (embedding vector_cosine_ops)" in indexdef


def test_halfvec_above_2000_dimensions_and_ivfflat_l2(pg_uri, table):
    result = PgVectorWriter(pg_uri, table, index=IndexSettings(kind="ivfflat", metric="l2")).write(
        make_batch(3, dim=2048)
    )
    assert result.index_built
    with psycopg.connect(pg_uri) as conn:
        kind = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
            (table,),
        ).fetchone()[0]
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s", (table, "%ivfflat")
        ).fetchone()[0]
    assert kind == "halfvec(2048)"
    assert "halfvec_l2_ops" in indexdef


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda b: b.embeddings.__setitem__((3, 0), np.nan), "NaN or inf"),
        (lambda b: b.embeddings.__setitem__((4, 1), np.inf), "NaN or inf"),
        (lambda b: b.ids.__setitem__(5, "d1"), "duplicate of row 1"),
        (lambda b: b.ids.__setitem__(6, ""), "id is empty"),
        (lambda b: b.metadata.__setitem__(7, "{not json"), "not JSON"),
    ],
)
def test_bad_rows_fail_before_anything_is_written(pg_uri, table, spoil, message):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(make_batch(10))
    before = rows_of(pg_uri, table)
    bad = make_batch(10, seed=1, prefix="d")
    bad.contents = [f"new {i}" for i in range(10)]
    spoil(bad)
    with pytest.raises(DataValidationError, match=message):
        writer.write(bad)
    assert rows_of(pg_uri, table) == before


def test_bad_rows_never_create_a_table(pg_uri, table):
    bad = make_batch(4)
    bad.embeddings[0, 0] = np.nan
    with pytest.raises(DataValidationError):
        PgVectorWriter(pg_uri, table).write(bad)
    assert not table_exists(pg_uri, table)


def test_wrong_dimension_for_existing_table(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(make_batch(5, dim=8))
    with pytest.raises(DataValidationError, match="holds 8-dimensional vectors; these have 16"):
        writer.write(make_batch(5, dim=16, prefix="new"))
    assert len(rows_of(pg_uri, table)) == 5


def test_rerun_leaves_one_row_per_id_with_latest_values(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(make_batch(30))
    again = writer.write(make_batch(30))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 30)
    changed = make_batch(40, seed=2)
    changed.contents = [f"v2 {i}" for i in range(40)]
    result = writer.write(changed)
    assert (result.inserted, result.updated) == (10, 30)
    rows = rows_of(pg_uri, table)
    assert len(rows) == 40 and len({r[0] for r in rows}) == 40
    assert {r[1] for r in rows} == {f"v2 {i}" for i in range(40)}
    hits = search_vector(pg_uri, changed.embeddings[7], table=table, k=1)
    assert hits[0].id == "d7" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_delete_by_ids(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(make_batch(10))
    assert writer.delete(["d1", "d2", "missing"]) == 2
    assert {r[0] for r in rows_of(pg_uri, table)} == {f"d{i}" for i in range(10)} - {"d1", "d2"}
    assert PgVectorWriter(pg_uri, "never_created_table").delete(["a"]) == 0


def test_dropped_connection_is_retried_with_backoff(pg_uri, table):
    calls, slept = [], []

    def connect():
        conn = psycopg.connect(pg_uri)
        calls.append(conn.info.backend_pid)
        if len(calls) == 1:  # the first connection is killed by the server before it is used
            with psycopg.connect(pg_uri, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return conn

    result = PgVectorWriter(connect, table, backoff=0.25, sleep=slept.append).write(make_batch(25))
    assert result.attempts == 2 and slept == [0.25]
    assert len(rows_of(pg_uri, table)) == 25


def test_non_connection_errors_are_not_retried(pg_uri, table):
    slept = []
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, other TEXT)')
    with pytest.raises(DataValidationError, match="no embedding column"):
        PgVectorWriter(pg_uri, table, sleep=slept.append).write(make_batch(3))
    assert slept == []


KILLED_UPLOAD = """
import sys
from embedpipe.vectorstore import IndexSettings, PgVectorWriter, read_parquet_vectors
batch = read_parquet_vectors(sys.argv[3])
print("loaded", flush=True)
PgVectorWriter(sys.argv[1], sys.argv[2], index=IndexSettings(kind="none")).write(batch)
print("finished", flush=True)
"""


def test_upload_killed_halfway_then_rerun_leaves_table_complete(pg_uri, table, tmp_path):
    n = 50_000
    batch = make_batch(n, dim=128, seed=3)
    path = write_parquet_vectors(batch, tmp_path / "vectors.parquet")
    writer = PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none"))  # the load, not an index build, is killed
    writer.write(make_batch(1000, dim=128, seed=4))  # an existing table: the upload goes through staging
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPLOAD, pg_uri, table, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "loaded"
        deadline = time.monotonic() + 60
        with psycopg.connect(pg_uri, autocommit=True) as admin:
            while time.monotonic() < deadline:  # wait until the child is mid-COPY / mid-upsert
                busy = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND (query LIKE 'COPY%%' OR query LIKE 'WITH written%%')"
                ).fetchone()[0]
                if busy:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the upload never started")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            while admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%' OR query LIKE 'WITH written%%'"
            ).fetchone()[0]:
                time.sleep(0.05)  # the server notices the dead client and rolls back
        assert child.returncode == -signal.SIGKILL
        assert len(rows_of(pg_uri, table)) == 1000  # all or nothing: the killed upload left nothing
    finally:
        if child.poll() is None:
            child.kill()
    result = writer.write(batch)
    assert result.rows == n
    with psycopg.connect(pg_uri) as conn:
        count, distinct = conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{table}"').fetchone()
        assert (count, distinct) == (n, n)  # the 1,000 first ids were overwritten, not duplicated
        assert conn.execute(f"SELECT content FROM \"{table}\" WHERE id = 'd5'").fetchone()[0] == "text 5"


def test_search_with_metadata_filter(pg_uri, table):
    batch = make_batch(200, dim=16, seed=5)
    PgVectorWriter(pg_uri, table).write(batch)
    query = batch.embeddings[11]  # an odd one
    assert search_vector(pg_uri, query, table=table, k=3)[0].id == "d11"
    evens = search_vector(pg_uri, query, table=table, k=5, where={"group": "even"})
    assert len(evens) == 5 and all(h.metadata["group"] == "even" for h in evens)
    assert [h.score for h in evens] == sorted((h.score for h in evens), reverse=True)
    exact = search_vector(pg_uri, query, table=table, k=5, where={"group": "odd", "n": 11})
    assert [h.id for h in exact] == ["d11"]
    assert search_vector(pg_uri, query, table=table, k=5, where={"group": "x' OR '1'='1"}) == []
    with pytest.raises(ValueError, match="16"):
        search_vector(pg_uri, np.ones(4), table=table)
