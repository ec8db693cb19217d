"""The smaller pipeline (importer → embed_corpus → upload_vectors): proof that the components are reusable
outside tune_and_index; run with kfp.local against the real embedded Postgres."""

import json

import pandas as pd
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


def chunks_of(corpus_lines: list[str], chunk_tokens: int) -> dict[str, str]:
    """{row id: content} the corpus should give with this chunking: one row per token window of each text."""
    from embedpipe.embed.documents import chunk_id, chunk_spans
    from embedpipe.embed.pipeline import load_tokenizer

    tokenizer = load_tokenizer("default")
    expected = {}
    for doc in map(json.loads, corpus_lines):
        offsets = tokenizer(doc["text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for index, (start, end) in enumerate(chunk_spans(offsets, chunk_tokens, 0)):
            expected[chunk_id(doc["_id"], index)] = doc["text"][start:end]
    return expected


def table_rows(pg_uri: str, table: str) -> dict[str, str]:
    with psycopg.connect(pg_uri) as connection:
        return dict(connection.execute(f"SELECT id, content FROM {table}").fetchall())


@pytest.mark.slow
def test_a_snapshot_run_leaves_exactly_the_rows_of_the_new_corpus(tmp_path, tiny_example_data, pg_uri):
    """A document removed and another edited into fewer chunks: `append` keeps their old rows, `snapshot`
    (the pipelines' default) leaves exactly the rows the new corpus gives, carried-over rows included."""
    chunk_tokens = 12
    corpus = tiny_example_data / "corpus.jsonl"
    lines = [line for line in corpus.read_text().splitlines() if line.strip()]
    table = "snapshot_pipeline"
    arguments = {
        **LOCAL,
        "corpus_path": str(corpus),
        "database_uri": pg_uri,
        "vector_table": table,
        "chunk_tokens": chunk_tokens,
    }
    first = run_locally(embed_and_index, arguments, pipeline_root=tmp_path / "runs")
    assert table_rows(pg_uri, table) == chunks_of(lines, chunk_tokens)

    removed, shortened = json.loads(lines[1]), json.loads(lines[2])
    shortened["text"] = " ".join(shortened["text"].split()[:4])  # a few words: one chunk instead of several
    new_lines = [lines[0], json.dumps(shortened)] + lines[3:]
    corpus.write_text("\n".join(new_lines) + "\n")
    expected = chunks_of(new_lines, chunk_tokens)
    old = chunks_of(lines, chunk_tokens)
    vanished = set(old) - set(expected)
    assert any(i.startswith(removed["_id"] + "#") for i in vanished)
    assert {i for i in vanished if i.startswith(shortened["_id"] + "#")}, "the edit must leave fewer chunks"

    arguments["previous_vectors_path"] = first.uri(first.task("embed-corpus"), "vectors")
    appended = run_locally(embed_and_index, {**arguments, "write_mode": "append"}, pipeline_root=tmp_path / "runs")
    assert appended.metadata(appended.task("upload-vectors"), "metrics")["deleted"] == 0
    after_append = table_rows(pg_uri, table)
    assert vanished <= set(after_append)  # the removed document and the vanished chunks are still searchable
    assert {i: after_append[i] for i in expected} == expected

    snapshot = run_locally(embed_and_index, arguments, pipeline_root=tmp_path / "runs")  # write_mode's default
    embedded = snapshot.metadata(snapshot.task("embed-corpus"), "metrics")
    assert embedded["documents_reused"] == len(new_lines) - 1 and embedded["documents_embedded"] == 1
    # the vectors artifact holds every row of the corpus, the carried-over ones included: snapshot relies on it
    vectors = pd.read_parquet(snapshot.uri(snapshot.task("embed-corpus"), "vectors"), columns=["id", "content"])
    assert dict(zip(vectors["id"], vectors["content"], strict=True)) == expected
    uploaded = snapshot.metadata(snapshot.task("upload-vectors"), "metrics")
    assert (uploaded["rows"], uploaded["deleted"]) == (len(expected), len(vanished))
    assert table_rows(pg_uri, table) == expected
