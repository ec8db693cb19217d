"""BigQuery and Vertex AI Vector Search honour the run's meaning (fakes that apply the calls: neither is reachable).

The scenario of issue 17: a first run writes A, B#0, B#1, B#2, C; then C is removed from the corpus and B
is edited into one chunk. A snapshot of A, B#0 leaves exactly A, B#0; an append leaves all five.
"""

import datetime
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedpipe.vectorstore import VectorBatch, write_parquet_vectors
from embedpipe.vectorstore.bigquery import merge_sql, staging_table_id, upload_to_bigquery
from embedpipe.vectorstore.upload import UploadConfig, upload_vectors
from embedpipe.vectorstore.vector_search import VectorSearchSettings, read_listing, upload_to_vector_search
from tests.unit.cloud_fakes import FakeBigQuery, FakeIndexes

FIRST = ["A", "B#0", "B#1", "B#2", "C"]
SECOND = ["A", "B#0"]
INDEX = "projects/p/locations/us-central1/indexes/42"


def rows(ids, seed=0) -> VectorBatch:
    vectors = np.random.default_rng(seed).normal(size=(len(ids), 4)).astype("float32")
    metadata = [json.dumps({"doc": ident.split("#")[0], "n": n}) for n, ident in enumerate(ids)]
    return VectorBatch(list(ids), vectors, [f"text of {ident}" for ident in ids], metadata)


def vectors_folder(tmp_path, name, ids, seed) -> str:
    write_parquet_vectors(rows(ids, seed), tmp_path / name / "vectors-00000-of-00001.parquet")
    return str(tmp_path / name)


@pytest.mark.parametrize("write_mode, left", [("snapshot", SECOND), ("append", FIRST)])
def test_bigquery_after_a_removal_and_a_shorter_edit(tmp_path, write_mode, left):
    client = FakeBigQuery()
    config = UploadConfig(target="bigquery", table="proj.ds.vectors", write_mode=write_mode)
    first = upload_vectors(vectors_folder(tmp_path, "run1", FIRST, 1), config, bigquery_client=client)
    assert (first.metrics["inserted"], first.metrics["updated"], first.metrics["deleted"]) == (5, 0, 0)
    second = upload_vectors(vectors_folder(tmp_path, "run2", SECOND, 2), config, bigquery_client=client)
    table = client.tables["proj.ds.vectors"]
    assert sorted(table) == sorted(left)
    assert table["B#0"]["embedding"] == pytest.approx(rows(SECOND, 2).embeddings[1].tolist())  # the edit's vector
    assert table["B#0"]["metadata"] == {"doc": "B", "n": 1}
    deleted = 3 if write_mode == "snapshot" else 0
    assert (second.metrics["inserted"], second.metrics["updated"], second.metrics["deleted"]) == (0, 2, deleted)
    assert list(client.tables) == ["proj.ds.vectors"]  # both staging tables dropped
    assert ("WHEN NOT MATCHED BY SOURCE THEN DELETE" in client.queries[-1]) == (write_mode == "snapshot")


def test_bigquery_staging_tables_are_per_run_expire_and_are_dropped_even_when_the_merge_fails(tmp_path):
    client = FakeBigQuery(fail_merge=True)
    before = datetime.datetime.now(datetime.UTC)
    with pytest.raises(RuntimeError, match="Quota"):
        upload_to_bigquery(rows(FIRST), "proj.ds.vectors", write_mode="snapshot", client=client)
    ((staging, expires),) = client.created
    assert staging.startswith("proj.ds.vectors_staging_") and staging != "proj.ds.vectors_staging"
    assert before + datetime.timedelta(hours=23) < expires < before + datetime.timedelta(days=2)
    assert client.dropped == [staging] and client.tables == {"proj.ds.vectors": {}}  # nothing merged
    assert client.loaded[0][1].write_disposition == "WRITE_EMPTY"


def test_two_concurrent_bigquery_runs_load_into_different_staging_tables():
    client = FakeBigQuery(barrier=threading.Barrier(2))  # both loads must be under way at once
    with ThreadPoolExecutor(2) as pool:
        done = list(
            pool.map(
                lambda ids: upload_to_bigquery(rows(ids), "proj.ds.vectors", write_mode="append", client=client),
                (["a1", "a2"], ["b1"]),
            )
        )
    assert done[0].staging_id != done[1].staging_id
    assert {name for name, _ in client.created} == {done[0].staging_id, done[1].staging_id}
    assert sorted(client.tables["proj.ds.vectors"]) == ["a1", "a2", "b1"] and list(client.tables) == [
        "proj.ds.vectors"
    ]


def test_bigquery_refuses_an_unknown_write_mode_before_any_call():
    client = FakeBigQuery()
    with pytest.raises(ValueError, match="write_mode 'replace' is not one of"):
        upload_to_bigquery(rows(FIRST), "proj.ds.vectors", write_mode="replace", client=client)
    assert client.created == [] and client.queries == []
    with pytest.raises(ValueError, match="write_mode"):
        merge_sql("p.d.t", "p.d.s", "replace")


def test_staging_table_names_stay_within_bigquery_s_limit():
    long = "p.d." + "t" * 1024
    assert len(staging_table_id(long).split(".")[2]) == 1024
    assert staging_table_id("p.d.t") != staging_table_id("p.d.t")


@pytest.mark.parametrize("write_mode, left", [("snapshot", SECOND), ("append", FIRST)])
def test_vector_search_batch_update_after_a_removal_and_a_shorter_edit(tmp_path, write_mode, left):
    fake = FakeIndexes()
    contents = [str(tmp_path / "artifacts" / run / "contents") for run in ("run1", "run2")]
    configs = [
        UploadConfig(
            target="vertex_vector_search",
            vector_search_index=INDEX,
            contents_delta_uri=folder,
            vector_search_previous_ids=previous,
            write_mode=write_mode,
        )
        for folder, previous in zip(contents, ["", contents[0]])
    ]
    upload_vectors(vectors_folder(tmp_path, "run1", FIRST, 1), configs[0], index_class=fake.index_class)
    second = upload_vectors(vectors_folder(tmp_path, "run2", SECOND, 2), configs[1], index_class=fake.index_class)
    assert sorted(fake.points[INDEX]) == sorted(left)
    assert fake.points[INDEX]["B#0"]["embedding"] == pytest.approx(rows(SECOND, 2).embeddings[1].tolist())
    overwrite = write_mode == "snapshot"
    assert [c[2] for c in fake.calls] == [overwrite, overwrite]
    deleted = 3 if write_mode == "snapshot" else 0
    assert (second.metrics["inserted"], second.metrics["updated"], second.metrics["deleted"]) == (0, 2, deleted)
    assert read_listing(contents[1]) == set(left)  # what the index holds, for the next run


@pytest.mark.parametrize("write_mode, left", [("snapshot", SECOND), ("append", FIRST)])
def test_vector_search_stream_update_after_a_removal_and_a_shorter_edit(tmp_path, write_mode, left):
    fake = FakeIndexes()
    first = VectorSearchSettings(INDEX, str(tmp_path / "run1"), "stream", "append")
    upload_to_vector_search(rows(FIRST, 1), first, index_class=fake.index_class)
    listing = str(tmp_path / "run1.ids.jsonl")
    second = VectorSearchSettings(INDEX, str(tmp_path / "run2"), "stream", write_mode, previous_ids=listing)
    done = upload_to_vector_search(rows(SECOND, 2), second, index_class=fake.index_class)
    assert sorted(fake.points[INDEX]) == sorted(left)
    assert fake.points[INDEX]["B#0"]["embedding"] == pytest.approx(rows(SECOND, 2).embeddings[1].tolist())
    removed = [call for call in fake.calls if call[0] == "remove_datapoints"]
    assert removed == ([("remove_datapoints", ["B#1", "B#2", "C"])] if write_mode == "snapshot" else [])
    assert not any(call[0] == "update_embeddings" for call in fake.calls)
    assert done.counts == {"inserted": 0, "updated": 2, "deleted": 3 if write_mode == "snapshot" else 0}
    assert read_listing(done.listing) == set(left)


def test_a_streamed_snapshot_without_the_previous_listing_is_refused_before_any_call(tmp_path):
    fake = FakeIndexes()
    config = UploadConfig(
        target="vertex_vector_search",
        vector_search_index=INDEX,
        contents_delta_uri=str(tmp_path / "c"),
        vector_search_update_method="stream",
        write_mode="snapshot",
    )
    with pytest.raises(ValueError, match="needs vector_search_previous_ids") as refused:
        upload_vectors(vectors_folder(tmp_path, "v", FIRST, 1), config, index_class=fake.index_class)
    assert "write_mode 'append'" in str(refused.value) and "'batch'" in str(refused.value)
    assert fake.calls == [] and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"vector_search_index": ""}, "needs vector_search_index"),
        ({"vector_search_index": "indexes/42"}, "must look like projects/P/locations/L/indexes/ID"),
        ({"vector_search_update_method": "BATCH_UPDATE"}, "is not one of ('batch', 'stream')"),
        ({"contents_delta_uri": ""}, "'batch' needs contents_delta_uri"),
        ({"write_mode": "mirror"}, "write_mode 'mirror' is not one of"),
    ],
)
def test_vector_search_settings_are_checked_first(changes, message):
    config = {
        "target": "vertex_vector_search",
        "vector_search_index": INDEX,
        "contents_delta_uri": "gs://b/c",
        **changes,
    }
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UploadConfig(**config).check()


def test_a_bad_listing_names_file_and_line(tmp_path):
    listing = tmp_path / "run1.ids.jsonl"
    listing.write_text('"A"\nB#0\n')
    with pytest.raises(ValueError, match=r"run1\.ids\.jsonl:2: an id listing has one JSON string per line"):
        read_listing(str(listing))


def test_a_snapshot_of_no_rows_is_refused_rather_than_emptying_the_table_or_index(tmp_path):
    client, fake = FakeBigQuery(), FakeIndexes()
    with pytest.raises(ValueError, match="no rows would delete every row of BigQuery table proj.ds.vectors"):
        upload_to_bigquery(rows([]), "proj.ds.vectors", write_mode="snapshot", client=client)
    settings = VectorSearchSettings(INDEX, str(tmp_path / "c"), "batch", "snapshot")
    with pytest.raises(ValueError, match=f"no rows would empty Vector Search index {INDEX}"):
        upload_to_vector_search(rows([]), settings, index_class=fake.index_class)
    assert client.created == [] and fake.calls == [] and not (tmp_path / "c").exists()
