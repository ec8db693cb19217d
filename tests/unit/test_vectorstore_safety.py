"""The pgvector writer under faults: concurrent writers, long names, bad vectors, deadlocks, refused rows.

Against the real embedded PostgreSQL (the `pg_uri` session fixture), except the retry loop's unit tests.
"""

import json
import logging
import threading
import uuid

import numpy as np
import psycopg
import pytest

from embedpipe.validation import DataValidationError
from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
from embedpipe.vectorstore.db_errors import VectorStoreError
from embedpipe.vectorstore.search import search_vector
from embedpipe.vectorstore.transactions import run_transaction


def unit_vectors(n, dim=8, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype("float32")
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def batch_of(ids, seed=0, dim=8, label="v"):
    return VectorBatch(
        list(ids),
        unit_vectors(len(ids), dim, seed),
        [f"{label} {i}" for i in ids],
        [json.dumps({"label": label}) for _ in ids],
    )


@pytest.fixture
def table():
    return f"t_{uuid.uuid4().hex[:10]}"


def vector_indexes(uri, table):
    with psycopg.connect(uri) as conn:
        return conn.execute(
            "SELECT ic.relname, am.amname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = %s::regclass AND am.amname IN ('hnsw', 'ivfflat')",
            (table,),
        ).fetchall()


def run_together(pg_uri, table, batches):
    """Writes each batch from its own thread, all released at once; returns {k: WriteResult}, errors."""
    start, errors, results = threading.Barrier(len(batches)), [], {}

    def run(k):
        try:
            start.wait()
            results[k] = PgVectorWriter(pg_uri, table, backoff=0.05).write(batches[k])
        except Exception as err:  # noqa: BLE001 - reported by the caller
            errors.append(f"writer {k}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, errors


def check_rows(pg_uri, table, writers, shared, earlier):
    with psycopg.connect(pg_uri) as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        rows = {
            r[0]: (r[1], r[2].to_numpy())
            for r in conn.execute(f'SELECT id, content, embedding FROM "{table}"').fetchall()
        }
    own = {ident for batch in writers[3:] for ident in batch.ids}
    assert set(rows) == set(shared) | own | earlier
    for batch in writers[3:]:  # rows nobody else wrote are exactly this writer's
        for i, ident in enumerate(batch.ids):
            assert rows[ident][0] == batch.contents[i]
            np.testing.assert_allclose(rows[ident][1], batch.embeddings[i], rtol=1e-6)
    for ident in shared:  # a shared id holds one writer's row whole: its content with its own vector
        content, embedding = rows[ident]
        k = int(content.split()[0][1:])
        np.testing.assert_allclose(embedding, writers[k].embeddings[writers[k].ids.index(ident)], rtol=1e-6)


def test_concurrent_uploads_and_upserts_into_a_new_table(pg_uri, table):
    """Six writers start together on a table that does not exist, then six more on the existing table:
    three write the same ids (each in its own shuffled order, so unordered upserts could deadlock), three
    their own ids. Every write succeeds, the rows are whole, there is one HNSW index."""
    shared, earlier = [f"s{i:03d}" for i in range(300)], set()
    for phase in range(2):
        writers = []
        for k in range(6):
            seed = 10 * phase + k
            ids = (
                list(np.random.default_rng(seed).permutation(shared))
                if k < 3
                else [f"own{k}_{phase}_{i}" for i in range(100)]
            )
            writers.append(batch_of(ids, seed=seed, label=f"w{k}"))
        results, errors = run_together(pg_uri, table, writers)
        assert errors == []
        assert sum(r.created_table for r in results.values()) == (1 if phase == 0 else 0)
        assert len(vector_indexes(pg_uri, table)) == 1
        check_rows(pg_uri, table, writers, shared, earlier)
        earlier |= {ident for batch in writers[3:] for ident in batch.ids}


def test_long_tables_sharing_a_prefix_each_get_their_index(pg_uri):
    prefix = "long_" + uuid.uuid4().hex[:8] + "_" + "x" * 44  # 58 characters: the index name is cut
    tables = [prefix + "_a", prefix + "_b", "sch_" + uuid.uuid4().hex[:6] + "." + prefix + "_c"]
    names = []
    for n, table in enumerate(tables):
        result = PgVectorWriter(pg_uri, table).write(batch_of([f"d{i}" for i in range(5)], seed=n))
        found = vector_indexes(pg_uri, table)
        assert [kind for _, kind in found] == ["hnsw"], table
        assert result.index_built == found[0][0] and len(found[0][0].encode()) <= 63
        names.append(found[0][0])
    assert len(set(names)) == 3
    again = PgVectorWriter(pg_uri, tables[1]).write(batch_of(["new"], seed=9))
    assert again.index_built == "" and len(vector_indexes(pg_uri, tables[1])) == 1


def test_an_index_of_another_name_is_recognised(pg_uri, table):
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(batch_of(["a", "b"]))
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f'CREATE INDEX my_own_index ON "{table}" USING hnsw (embedding vector_l2_ops)')
    result = PgVectorWriter(pg_uri, table).write(batch_of(["c"], seed=1))
    assert result.index_built == ""
    assert vector_indexes(pg_uri, table) == [("my_own_index", "hnsw")]


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda e: e.__setitem__(3, 0.0), "row 3 (id 'd3'): is a zero vector"),
        (lambda e: e.__setitem__(5, 1e-30), "row 5 (id 'd5'): is a zero vector"),
        (lambda e: e.__setitem__(2, 1e30), "row 2 (id 'd2'): has values too large"),
        (lambda e: e.__setitem__((4, 0), np.inf), "row 4 (id 'd4'): contains NaN or inf"),
    ],
)
def test_unscorable_vectors_are_refused_with_the_row_id(pg_uri, table, spoil, message):
    batch = batch_of([f"d{i}" for i in range(8)])
    spoil(batch.embeddings)
    with pytest.raises(DataValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PgVectorWriter(pg_uri, table).write(batch)
    with psycopg.connect(pg_uri) as conn:
        assert not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


@pytest.mark.parametrize(
    "spoil, field, message",
    [
        (lambda b: b.contents.__setitem__(2, "a\x00b"), "content", "row 2 (id 'd2'): contains a NUL character"),
        (lambda b: b.ids.__setitem__(1, "d\x001"), "id", "row 1 (id 'd\\x001'): id contains a NUL"),
        (lambda b: b.contents.__setitem__(3, "bad \ud800"), "content", "row 3 (id 'd3'): is not valid Unicode"),
        (lambda b: b.metadata.__setitem__(4, '{"a": NaN}'), "metadata", "row 4 (id 'd4'): NaN is not valid JSON"),
        (lambda b: b.metadata.__setitem__(5, '{"a": "x\\u0000"}'), "metadata", "row 5 (id 'd5'): value"),
        (lambda b: b.metadata.__setitem__(6, '{"a": "\\udc00"}'), "metadata", "row 6 (id 'd6'): value"),
        (lambda b: b.ids.__setitem__(0, "x" * 3000), "id", "row 0 (id 'xxxx"),
    ],
)
def test_text_postgres_refuses_is_caught_before_writing(pg_uri, table, spoil, field, message):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch_of([f"d{i}" for i in range(8)]))
    bad = batch_of([f"d{i}" for i in range(8)], seed=1, label="new")
    spoil(bad)
    with pytest.raises(DataValidationError) as caught:
        writer.write(bad)
    assert [p.field for p in caught.value.problems] == [field]
    assert message in str(caught.value)
    assert writer.count() == 8
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{table}" WHERE content LIKE %s', ("new%",)).fetchone()[0] == 0


def test_database_refusals_name_the_row(pg_uri, table):
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, embedding vector(8), content VARCHAR(12),'
            " metadata JSONB CHECK (metadata ? 'label'))"
        )
    writer = PgVectorWriter(pg_uri, table)
    long_content = batch_of([f"d{i}" for i in range(10)])
    long_content.contents[7] = "much too long for twelve"
    with pytest.raises(DataValidationError) as caught:
        writer.write(long_content)
    text = str(caught.value)
    assert "row 7 (id 'd7')" in text and "character varying(12)" in text and "SQLSTATE 22001" in text
    assert caught.value.problems[0].field == "content"
    assert "Traceback" not in text and "psycopg" not in text
    no_label = batch_of([f"e{i}" for i in range(10)])
    no_label.metadata[4] = '{"other": 1}'
    with pytest.raises(DataValidationError, match=r"row 4 \(id 'e4'\).*check constraint") as caught:
        writer.write(no_label)
    assert "embedpipe_probe" not in str(caught.value)
    assert writer.count() == 0


def test_a_table_of_other_columns_is_a_clear_error(pg_uri, table):
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, embedding vector(8), content TEXT, metadata JSONB)'
        )
    with pytest.raises(VectorStoreError, match=r"column \"id\" is of type integer.*id TEXT PRIMARY KEY"):
        PgVectorWriter(pg_uri, table).write(batch_of(["a"]))


def test_a_real_deadlock_is_retried(pg_uri, table, caplog):
    """Two transactions lock two rows in opposite orders; the server kills one (40P01); it is re-run."""
    PgVectorWriter(pg_uri, table).write(batch_of(["a", "b"]))
    both_locked_first, attempts = threading.Barrier(2), {}

    def work(first, second, who):
        def run(session):
            attempts[who] = attempts.get(who, 0) + 1
            session.execute(f"UPDATE \"{table}\" SET content = %s WHERE id = '{first}'", (who,))
            if attempts[who] == 1:
                both_locked_first.wait(10)
            session.execute(f"UPDATE \"{table}\" SET content = %s WHERE id = '{second}'", (who,))
            return who

        return run

    results, errors = [], []

    def thread(first, second, who):
        try:
            writer = PgVectorWriter(pg_uri, table, backoff=0.05)
            results.append(writer.run_transaction(work(first, second, who)))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    with caplog.at_level(logging.WARNING, logger="embedpipe.vectorstore.transactions"):
        threads = [threading.Thread(target=thread, args=args) for args in (("a", "b", "x"), ("b", "a", "y"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert sorted(n for _, n in results) == [1, 2]  # one ran once, the deadlock victim twice
    assert any("deadlock" in r.message and "DeadlockDetected" in r.message for r in caplog.records)


class FakeConnection:
    def __init__(self):
        self.committed = False

    def commit(self):
        self.committed = True

    def rollback(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("error", [psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure])
def test_retry_loop_reruns_deadlocks_with_jittered_backoff(error):
    calls, slept = [], []

    def work(session):
        calls.append(session)
        if len(calls) == 1:
            raise error("simulated")
        return "done"

    result = run_transaction(FakeConnection, work, retries=3, backoff=0.2, sleep=slept.append)
    assert result == ("done", 2)
    assert len(slept) == 1 and 0.1 <= slept[0] <= 0.3
    assert calls[1].conn.committed and not calls[0].conn.committed


def test_retry_loop_is_bounded_and_leaves_other_errors_alone():
    slept = []

    def always(session):
        raise psycopg.errors.DeadlockDetected("again")

    with pytest.raises(psycopg.errors.DeadlockDetected):
        run_transaction(FakeConnection, always, retries=2, backoff=0.1, sleep=slept.append)
    assert len(slept) == 2
    slept.clear()

    def bad(session):
        raise psycopg.errors.UniqueViolation("not retried")

    with pytest.raises(psycopg.errors.UniqueViolation):
        run_transaction(FakeConnection, bad, retries=2, backoff=0.1, sleep=slept.append)
    assert slept == []


def test_large_upsert_rebuilds_the_index_small_one_inserts(pg_uri, table, caplog):
    n = 1200
    ids = [f"d{i}" for i in range(n)]
    index = IndexSettings(m=8, ef_construction=32)
    writer = PgVectorWriter(pg_uri, table, index=index)
    first = writer.write(batch_of(ids, seed=1))
    ((name, _),) = vector_indexes(pg_uri, table)
    assert first.index_built == name
    with psycopg.connect(pg_uri) as conn:
        definition = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()[0]

    small = writer.write(batch_of(ids[:50], seed=2, label="small"))
    assert (small.updated, small.index_built) == (50, "")
    unchanged = writer.write(batch_of(ids, seed=1))  # the first values again: 1,150 rows unchanged
    assert unchanged.index_built == "" and unchanged.updated == 50
    changed = batch_of(ids[100:] + [f"new{i}" for i in range(100)], seed=3, label="big")
    with caplog.at_level(logging.INFO, logger="embedpipe.vectorstore.rebuild"):
        big = writer.write(changed)
    assert (big.inserted, big.updated, big.unchanged, big.index_built) == (100, n - 100, 0, name)
    assert any("table rewritten" in r.message for r in caplog.records)
    with psycopg.connect(pg_uri) as conn:
        assert (
            conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()[0] == definition
        )
        rows = dict(conn.execute(f'SELECT id, content FROM "{table}"').fetchall())
    assert vector_indexes(pg_uri, table) == [(name, "hnsw")]
    assert len(rows) == n + 100  # the 100 rows the upsert left alone survived the rewrite
    assert rows["d5"] == "v d5" and rows["d105"] == "big d105" and rows["new7"] == "big new7"
    hit = search_vector(pg_uri, changed.embeddings[23], table=table, k=1)[0]
    assert hit.id == "d123" and hit.score == pytest.approx(1.0, abs=1e-5)


def test_large_upsert_into_a_table_with_other_columns_updates_in_place(pg_uri, table, caplog):
    ids = [f"d{i}" for i in range(1100)]
    writer = PgVectorWriter(pg_uri, table, index=IndexSettings(m=8, ef_construction=32))
    writer.write(batch_of(ids, seed=1))
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE \"{table}\" ADD COLUMN note TEXT DEFAULT 'kept'")
    with caplog.at_level(logging.INFO, logger="embedpipe.vectorstore.rebuild"):
        result = writer.write(batch_of(ids, seed=2, label="again"))
    assert result.updated == 1100 and result.index_built
    assert any("updated in place" in r.message for r in caplog.records)
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute(f'SELECT DISTINCT note, left(content, 5) FROM "{table}"').fetchall() == [("kept", "again")]
    assert len(vector_indexes(pg_uri, table)) == 1


def test_a_rewrite_that_fails_leaves_the_old_rows_and_index(pg_uri, table, monkeypatch):
    ids = [f"d{i}" for i in range(1100)]
    writer = PgVectorWriter(pg_uri, table, index=IndexSettings(m=8, ef_construction=32))
    writer.write(batch_of(ids, seed=1))
    before = vector_indexes(pg_uri, table)

    def fail(*args, **kwargs):  # after the TRUNCATE and the refill, before the index is built again
        raise RuntimeError("killed while building the index")

    monkeypatch.setattr("embedpipe.vectorstore.schema.recreate_indexes", fail)
    with pytest.raises(RuntimeError, match="killed"):
        writer.write(batch_of(ids, seed=2, label="lost"))
    assert vector_indexes(pg_uri, table) == before
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute(f'SELECT count(*), min(content) FROM "{table}"').fetchone() == (1100, "v d0")


def test_search_refuses_a_zero_query_and_skips_zero_rows_written_before(pg_uri, table):
    PgVectorWriter(pg_uri, table).write(batch_of([f"d{i}" for i in range(5)]))
    with psycopg.connect(pg_uri, autocommit=True) as conn:  # as an older writer could store it
        conn.execute(f"INSERT INTO \"{table}\" (id, embedding) VALUES ('zero', '[0,0,0,0,0,0,0,0]')")
    with pytest.raises(ValueError, match="all zeros"):
        search_vector(pg_uri, np.zeros(8), table=table)
    with pytest.raises(ValueError, match="NaN or inf"):
        search_vector(pg_uri, np.full(8, np.nan), table=table)
    hits = search_vector(pg_uri, unit_vectors(1, seed=7)[0], table=table, k=10)
    assert sorted(h.id for h in hits) == [f"d{i}" for i in range(5)]
    assert all(not np.isnan(h.score) for h in hits)
    assert len(search_vector(pg_uri, np.ones(8), table=table, k=10, metric="l2")) == 6  # zero is fine for l2
