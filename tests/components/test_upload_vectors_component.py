"""upload_vectors component (python_func with artifacts in tmp_path) and `embedpipe search` on the example data."""

import json
import uuid

import pandas as pd
import psycopg
import pytest
from kfp import dsl

from embedpipe import cli
from embedpipe.components import UploadVectorsOp, upload_vectors
from embedpipe.images import BASE_IMAGE
from embedpipe.vectorstore import IdentifierError, VectorBatch, write_parquet_vectors
from tests.conftest import EXAMPLE_DATA
from tests.unit.test_vectorstore import make_batch

#: A test-label query of scifact-mini and the document labelled relevant for it.
QUERY_ID, QUERY, EXPECTED = "1100", "Statins increase blood cholesterol.", "7662206"


def test_component_definition():
    assert UploadVectorsOp is upload_vectors
    assert upload_vectors.component_spec.implementation.container.image == BASE_IMAGE
    # vector_search_contents: Vector Search's files and id listing under the pipeline root (issue 17)
    assert set(upload_vectors.component_spec.outputs) == {"metrics", "report", "vector_search_contents"}
    assert upload_vectors.component_spec.inputs["target"].default == "postgres"
    assert upload_vectors.component_spec.inputs["write_mode"].default == "append"


def test_component_writes_metrics_and_report(pg_uri, tmp_path):
    vectors = dsl.Dataset(name="vectors", uri=str(tmp_path / "vectors"))
    write_parquet_vectors(make_batch(12), tmp_path / "vectors" / "vectors-00000-of-00001.parquet")
    metrics, report, contents = (
        dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics")),
        dsl.Markdown(name="report", uri=str(tmp_path / "report.md")),
        dsl.Artifact(name="vector_search_contents", uri=str(tmp_path / "vector_search_contents")),
    )
    outputs = dict(metrics=metrics, report=report, vector_search_contents=contents)
    table = f"c_{uuid.uuid4().hex[:8]}"
    upload_vectors.python_func(vectors=vectors, **outputs, database_uri=pg_uri, table=table)
    assert metrics.metadata["rows"] == 12 and metrics.metadata["rows_per_second"] > 0
    assert f"table: `{table}`" in (tmp_path / "report.md").read_text()
    with pytest.raises(IdentifierError):
        upload_vectors.python_func(vectors=vectors, **outputs, database_uri=pg_uri, table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="password in clear"):
        upload_vectors.python_func(vectors=vectors, **outputs, database_uri="postgresql://u:pw@h/db")


def test_vector_search_files_and_listing_go_to_the_component_s_own_output(tmp_path, monkeypatch):
    from google.cloud import aiplatform

    from tests.unit.cloud_fakes import FakeIndexes

    fake = FakeIndexes()
    monkeypatch.setattr(aiplatform, "MatchingEngineIndex", fake.index_class)
    vectors = dsl.Dataset(name="vectors", uri=str(tmp_path / "vectors"))
    write_parquet_vectors(make_batch(12), tmp_path / "vectors" / "vectors-00000-of-00001.parquet")
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    report = dsl.Markdown(name="report", uri=str(tmp_path / "report.md"))
    contents = dsl.Artifact(name="vector_search_contents", uri=str(tmp_path / "out"))
    index = "projects/p/locations/us-central1/indexes/7"
    upload_vectors.python_func(
        vectors=vectors,
        metrics=metrics,
        report=report,
        vector_search_contents=contents,
        target="vertex_vector_search",
        vector_search_index=index,
    )
    assert fake.calls == [("update_embeddings", str(tmp_path / "out" / "contents"), False)]
    assert sorted(fake.points[index]) == sorted(f"d{i}" for i in range(12)) and metrics.metadata["rows"] == 12
    listing = (tmp_path / "out" / "contents.ids.jsonl").read_text().splitlines()
    assert sorted(json.loads(line) for line in listing) == sorted(fake.points[index])


def test_component_snapshot_deletes_the_rows_it_was_not_given_and_reports_the_counts(pg_uri, tmp_path):
    table = f"c_{uuid.uuid4().hex[:8]}"

    def upload(n, **options):
        vectors = dsl.Dataset(name="vectors", uri=str(tmp_path / f"vectors{n}"))
        write_parquet_vectors(make_batch(n), tmp_path / f"vectors{n}" / "vectors-00000-of-00001.parquet")
        metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / f"metrics{n}"))
        report = dsl.Markdown(name="report", uri=str(tmp_path / f"report{n}.md"))
        contents = dsl.Artifact(name="vector_search_contents", uri=str(tmp_path / f"contents{n}"))
        upload_vectors.python_func(
            vectors=vectors,
            metrics=metrics,
            report=report,
            vector_search_contents=contents,
            database_uri=pg_uri,
            table=table,
            **options,
        )
        return metrics.metadata, (tmp_path / f"report{n}.md").read_text()

    upload(10)
    metrics, report = upload(7, write_mode="snapshot")
    assert {k: metrics[k] for k in ("rows", "inserted", "updated", "unchanged", "deleted")} == {
        "rows": 7,
        "inserted": 0,
        "updated": 0,
        "unchanged": 7,
        "deleted": 3,
    }
    assert "- write mode: **snapshot**" in report and "- deleted: 3" in report
    with psycopg.connect(pg_uri) as connection:
        assert connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == 7
    with pytest.raises(ValueError, match=r"write_mode 'mirror' is not one of"):
        upload(5, write_mode="mirror")


def test_embedpipe_search_finds_the_labelled_document(pg_uri, capsys):
    from embedpipe.models import encode, load_model
    from embedpipe.prompts import resolve_prompts
    from embedpipe.vectorstore import PgVectorWriter

    labels = pd.read_csv(EXAMPLE_DATA / "qrels" / "test.tsv", sep="\t", dtype=str)
    assert EXPECTED in set(labels[labels["query-id"] == QUERY_ID]["corpus-id"])
    queries = {q["_id"]: q["text"] for q in map(json.loads, (EXAMPLE_DATA / "queries.jsonl").open())}
    assert queries[QUERY_ID] == QUERY
    corpus = [json.loads(line) for line in (EXAMPLE_DATA / "corpus.jsonl").open()]
    # 60 documents keep the test fast on a CPU: the expected one and the first 59 others
    docs = [d for d in corpus if d["_id"] == EXPECTED] + [d for d in corpus if d["_id"] != EXPECTED][:59]
    model = load_model("default")
    prompts = resolve_prompts("RETRIEVAL_QUERY", model.prompts)
    embeddings = encode(model, prompts.format_documents([d["text"] for d in docs], [d["title"] for d in docs]))
    table = f"scifact_{uuid.uuid4().hex[:8]}"
    PgVectorWriter(pg_uri, table).write(
        VectorBatch(
            [d["_id"] for d in docs],
            embeddings,
            [d["text"] for d in docs],
            [json.dumps({"title": d["title"]}) for d in docs],
        )
    )
    assert cli.main(["search", QUERY, "--db", pg_uri, "--table", table, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == EXPECTED and len(hits) == 3
    title = next(d["title"] for d in docs if d["_id"] == EXPECTED)
    assert cli.main(["search", QUERY, "--db", pg_uri, "--table", table, "--where", f"title={title}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and EXPECTED in lines[0]
    # issue 17: the filter language through `embedpipe search --filter`
    quoted = "'" + title.replace("'", "''") + "'"
    assert (
        cli.main(["search", QUERY, "--db", pg_uri, "--table", table, "--json", "--filter", f"title = {quoted}"]) == 0
    )
    assert [hit["id"] for hit in json.loads(capsys.readouterr().out)] == [EXPECTED]
    assert (
        cli.main(["search", QUERY, "--db", pg_uri, "--table", table, "--json", "--filter", f"title != {quoted}"]) == 0
    )
    assert EXPECTED not in {hit["id"] for hit in json.loads(capsys.readouterr().out)}
