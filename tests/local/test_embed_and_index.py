"""The smaller pipeline (importer → embed_corpus → upload_vectors): proof that the components are reusable
outside tune_and_index; run with kfp.local against the real embedded Postgres."""

import psycopg
import pytest
import yaml

import compile as compile_script
from embedpipe import __version__
from embedpipe.local import run_locally
from embedpipe.pipelines import embed_and_index

LOCAL = {
    "project": "",
    "embed_runner": "DirectRunner",
    "dataflow_accelerator_type": "",
    "vector_target": "postgres",
    "database_iam_auth": False,
    "model": "default",
}


def test_compiled_pipeline_imports_the_corpus_and_reuses_the_components(tmp_path):
    compile_script.compile_all(tmp_path)
    spec = yaml.safe_load((tmp_path / "pipelines" / "embed_and_index.yaml").read_text())
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not parameters["corpus_path"].get("isOptional")
    assert parameters["model"]["defaultValue"] == "google/embeddinggemma-300m"
    executors = spec["deploymentSpec"]["executors"]
    assert any("importer" in e for e in executors.values())
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images and all(i.endswith(":" + __version__) for i in images)
    assert any("/embedpipe-dataflow:" in i or "/embedpipe-base:" in i for i in images)


@pytest.mark.slow
def test_embeds_and_indexes_then_reembeds_only_what_changed(tmp_path, tiny_example_data, pg_uri):
    corpus = tiny_example_data / "corpus.jsonl"
    arguments = {**LOCAL, "corpus_path": str(corpus), "database_uri": pg_uri, "vector_table": "reuse_pipeline"}
    first = run_locally(embed_and_index, arguments, pipeline_root=tmp_path / "runs")
    embedded = first.metadata(first.task("embed-corpus"), "metrics")
    lines = [line for line in corpus.read_text().splitlines() if line.strip()]
    assert embedded["documents_embedded"] == len(lines)
    with psycopg.connect(pg_uri) as connection:
        assert connection.execute("SELECT count(*) FROM reuse_pipeline").fetchone()[0] == len(lines)

    # Change one document; the second run, given the first run's vectors, embeds only that one.
    changed = lines[0].replace('"text": "', '"text": "Changed. ', 1)
    corpus.write_text("\n".join([changed] + lines[1:]) + "\n")
    arguments["previous_vectors_path"] = first.uri(first.task("embed-corpus"), "vectors")
    second = run_locally(embed_and_index, arguments, pipeline_root=tmp_path / "runs")
    metrics = second.metadata(second.task("embed-corpus"), "metrics")
    assert metrics["documents_embedded"] == 1 and metrics["documents_reused"] == len(lines) - 1
    with psycopg.connect(pg_uri) as connection:
        content = connection.execute(
            "SELECT content FROM reuse_pipeline WHERE content LIKE %s", ("%Changed. %",)
        ).fetchall()
    assert len(content) == 1
