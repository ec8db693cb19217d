"""`PgVectorWriter.write(batch, mode=...)`: a snapshot deletes what the batch does not name, in the same
transaction as its upserts and under the table's exclusive advisory lock; an append keeps it.

Against the real embedded PostgreSQL (the `pg_uri` session fixture).
"""

import itertools
import json
import logging
import threading
import uuid

import numpy as np
import psycopg
import pytest

from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
from embedpipe.vectorstore import snapshot as snapshot_module
from embedpipe.vectorstore.search import search_vector
from tests.unit.test_vectorstore_safety import vector_indexes


def batch_of(ids, seed=0, dim=8, label="v"):
    vectors = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorBatch(list(ids), vectors, [f"{label} {i}" for i in ids], [json.dumps({"label": label}) for _ in ids])


@pytest.fixture
def table():
    return f"s_{uuid.uuid4().hex[:10]}"


def rows_of(uri, table) -> dict[str, str]:
    with psycopg.connect(uri) as conn:
        return dict(conn.execute(f'SELECT id, content FROM "{table}"').fetchall())


def test_snapshot_deletes_what_the_batch_does_not_name_and_counts_each_row(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    first = writer.write(batch_of(["a", "b", "c", "d#0", "d#1", "d#2"]), mode="snapshot")
    assert (first.inserted, first.deleted, first.created_table) == (6, 0, True)

    old = batch_of(["a", "b", "c", "d#0", "d#1", "d#2"])
    # "b" is removed, "c" edited, "d" edited into fewer chunks, "e" new, "a" and "d#0" as they were
    new = VectorBatch(
        ["a", "c", "d#0", "e"],
        np.stack([old.embeddings[0], batch_of(["c"], seed=5).embeddings[0], old.embeddings[3], old.embeddings[1]]),
        ["v a", "edited c", "v d#0", "new e"],
        [old.metadata[0], old.metadata[2], old.metadata[3], old.metadata[1]],
    )
    result = writer.write(new, mode="snapshot")
    assert (result.inserted, result.updated, result.unchanged, result.deleted) == (1, 1, 2, 3)
    assert {k: result.metrics()[k] for k in ("inserted", "updated", "unchanged", "deleted")} == {
        "inserted": 1,
        "updated": 1,
        "unchanged": 2,
        "deleted": 3,
    }
    assert rows_of(pg_uri, table) == {"a": "v a", "c": "edited c", "d#0": "v d#0", "e": "new e"}
    again = writer.write(new, mode="snapshot")  # the same snapshot again changes nothing
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 4, 0)


def test_append_keeps_the_rows_the_batch_does_not_name(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch_of(["a", "b", "c"]))
    result = writer.write(batch_of(["a", "z"], seed=1, label="w"), mode="append")
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 0)
    assert rows_of(pg_uri, table) == {"a": "w a", "b": "v b", "c": "v c", "z": "w z"}


def test_an_empty_snapshot_is_refused_and_an_unknown_mode_too(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch_of(["a", "b"]))
    empty = VectorBatch([], np.zeros((0, 8), dtype="float32"), [], [])
    with pytest.raises(ValueError, match=rf"no rows would delete every row of table '{table}'.*TRUNCATE {table}"):
        writer.write(empty, mode="snapshot")
    with pytest.raises(ValueError, match=r"write_mode 'replace' is not one of \('snapshot', 'append'\)"):
        writer.write(batch_of(["a"]), mode="replace")
    assert writer.write(empty, mode="append").rows == 0
    assert sorted(rows_of(pg_uri, table)) == ["a", "b"]


def test_a_snapshot_that_fails_after_its_deletes_leaves_the_old_table(pg_uri, table, monkeypatch):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch_of(["a", "b", "c"]))
    deleted = []
    real_delete = snapshot_module.delete_missing

    def delete_then_fail(session, *args):
        deleted.append(real_delete(session, *args))
        raise RuntimeError("killed between the deletes and the upserts")

    monkeypatch.setattr("embedpipe.vectorstore.postgres.delete_missing", delete_then_fail)
    with pytest.raises(RuntimeError, match="killed"):
        writer.write(batch_of(["a"], seed=3, label="lost"), mode="snapshot")
    assert deleted == [2]  # the deletes ran, and were rolled back with the rest
    assert rows_of(pg_uri, table) == {"a": "v a", "b": "v b", "c": "v c"}


def test_a_large_snapshot_rewrites_the_table_without_the_rows_it_does_not_name(pg_uri, table, caplog):
    ids = [f"d{i}" for i in range(1500)]
    writer = PgVectorWriter(pg_uri, table, index=IndexSettings(m=8, ef_construction=32))
    writer.write(batch_of(ids, seed=1))
    ((index, _),) = vector_indexes(pg_uri, table)
    kept = ids[:300] + [f"n{i}" for i in range(100)]  # 1,200 deleted (over REBUILD_MIN_ROWS), 100 new
    with caplog.at_level(logging.INFO, logger="embedpipe.vectorstore.rebuild"):
        result = writer.write(batch_of(kept, seed=1), mode="snapshot")
    assert any("table rewritten" in r.message for r in caplog.records)
    assert (result.inserted, result.updated, result.unchanged, result.deleted) == (100, 0, 300, 1200)
    assert result.index_built == index
    assert sorted(rows_of(pg_uri, table)) == sorted(kept)
    assert vector_indexes(pg_uri, table) == [(index, "hnsw")]
    hit = search_vector(pg_uri, batch_of(kept, seed=1).embeddings[7], table=table, k=1)[0]
    assert hit.id == kept[7]


def test_a_large_snapshot_into_a_table_with_other_columns_deletes_in_place(pg_uri, table, caplog):
    ids = [f"d{i}" for i in range(1100)]
    writer = PgVectorWriter(pg_uri, table, index=IndexSettings(m=8, ef_construction=32))
    writer.write(batch_of(ids, seed=1))
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE \"{table}\" ADD COLUMN note TEXT DEFAULT 'kept'")
    with caplog.at_level(logging.INFO, logger="embedpipe.vectorstore.rebuild"):
        result = writer.write(batch_of(ids[:200], seed=2, label="again"), mode="snapshot")
    assert any("updated in place" in r.message for r in caplog.records)
    assert (result.updated, result.deleted) == (200, 900) and result.index_built
    assert sorted(rows_of(pg_uri, table)) == sorted(ids[:200])


def test_a_snapshot_waits_for_an_append_in_flight_and_then_deletes_its_rows(pg_uri, table):
    """The append holds the shared lock with an uncommitted row; the snapshot (exclusive lock) must wait for
    it, or its anti-join would miss that row and the append would commit it after the snapshot."""
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch_of(["a", "b"]))
    appended, release, errors = threading.Event(), threading.Event(), []

    def slow_append(session):
        writer.lock_for_write(session, 8)
        session.execute(f"INSERT INTO \"{table}\" (id, embedding) VALUES ('late', '[1,0,0,0,0,0,0,0]')")
        appended.set()
        release.wait(20)

    def run(target):
        try:
            target()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    append = threading.Thread(target=run, args=(lambda: writer.run_transaction(slow_append),))
    append.start()
    assert appended.wait(20)
    snap = threading.Thread(target=run, args=(lambda: writer.write(batch_of(["a", "c"]), mode="snapshot"),))
    snap.start()
    snap.join(1.5)
    blocked = snap.is_alive()
    release.set()
    append.join(20)
    snap.join(20)
    assert errors == []
    assert blocked, "the snapshot ran while an append held the table's shared lock"
    assert sorted(rows_of(pg_uri, table)) == ["a", "c"]


def test_concurrent_snapshots_and_appends_end_as_one_of_their_orders(pg_uri, table):
    PgVectorWriter(pg_uri, table).write(batch_of([f"old{i}" for i in range(50)]))
    batches = {
        "snap1": (batch_of([f"s1_{i}" for i in range(300)] + ["shared"], seed=1, label="s1"), "snapshot"),
        "snap2": (batch_of([f"s2_{i}" for i in range(300)] + ["shared"], seed=2, label="s2"), "snapshot"),
        "add1": (batch_of([f"a1_{i}" for i in range(200)], seed=3, label="a1"), "append"),
        "add2": (batch_of([f"a2_{i}" for i in range(200)] + ["shared"], seed=4, label="a2"), "append"),
    }
    start, errors = threading.Barrier(len(batches)), []

    def run(name):
        batch, mode = batches[name]
        try:
            start.wait()
            PgVectorWriter(pg_uri, table, backoff=0.05).write(batch, mode=mode)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=run, args=(name,)) for name in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []

    def replayed(order):  # the table after the writes, one after the other, in this order
        table_rows = {f"old{i}": f"v old{i}" for i in range(50)}
        for name in order:
            batch, mode = batches[name]
            if mode == "snapshot":
                table_rows = {}
            table_rows.update(zip(batch.ids, batch.contents, strict=True))
        return table_rows

    found = rows_of(pg_uri, table)
    assert any(found == replayed(order) for order in itertools.permutations(batches)), sorted(found)[:5]


def test_upload_config_write_mode_reaches_alloydb_through_pg8000(pg_uri, table, tmp_path):
    from embedpipe.vectorstore import write_parquet_vectors
    from embedpipe.vectorstore.upload import UploadConfig, upload_vectors
    from tests.unit.test_vectorstore_targets import FakeConnector

    write_parquet_vectors(batch_of([f"d{i}" for i in range(8)]), tmp_path / "all.parquet")
    write_parquet_vectors(batch_of([f"d{i}" for i in range(5)]), tmp_path / "fewer.parquet")
    config = UploadConfig(target="alloydb", instance="projects/p/locations/l/clusters/c/instances/i", table=table)
    config.iam_auth = True

    def upload(name, mode):
        config.write_mode = mode
        summary = upload_vectors(
            str(tmp_path / name), config, connector_factory=lambda **kw: FakeConnector(pg_uri, **kw)
        )
        return summary.metrics["deleted"], summary.markdown()

    assert upload("all.parquet", "snapshot")[0] == 0
    assert upload("fewer.parquet", "append")[0] == 0
    assert len(rows_of(pg_uri, table)) == 8
    deleted, report = upload("fewer.parquet", "snapshot")
    assert deleted == 3 and "write mode: **snapshot**" in report
    assert sorted(rows_of(pg_uri, table)) == [f"d{i}" for i in range(5)]
    config.write_mode = "mirror"
    with pytest.raises(ValueError, match=r"write_mode 'mirror' is not one of \('snapshot', 'append'\)"):
        config.check()
