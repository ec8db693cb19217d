"""embed_stream under kfp.local: a file of change messages (imported as a Dataset) played on Beam's local
runner into the embedded PostgreSQL; Pub/Sub and Dataflow cannot be reached from here."""

import json

import psycopg
import pytest
from kfp import dsl

from embedpipe.components import embed_stream
from embedpipe.local import run_locally

pytestmark = pytest.mark.slow


def test_a_file_of_messages_reaches_the_table_through_kfp_local(tmp_path, pg_uri):
    messages = tmp_path / "changes.jsonl"
    lines = [
        {"id": "k1", "title": "One", "text": "The first document.", "sequence": 1},
        {"id": "k2", "text": "The second document."},
        {"id": "k3", "text": "Soon deleted."},
        {"id": "k1", "title": "One", "text": "The first document, edited.", "sequence": 2},
        {"id": "k3", "delete": True},
        {"text": "a message without an id"},
    ]
    messages.write_text("".join(json.dumps(line) + "\n" for line in lines))

    @dsl.pipeline(name="embed-stream-local")
    def stream_a_file(messages_uri: str, database_uri: str):
        changes = dsl.importer(artifact_uri=messages_uri, artifact_class=dsl.Dataset)
        embed_stream(messages=changes.output, database_uri=database_uri, table="stream_kfp_local", write_shards=1)

    run = run_locally(
        stream_a_file, {"messages_uri": str(messages), "database_uri": pg_uri}, pipeline_root=tmp_path / "runs"
    )
    with psycopg.connect(pg_uri) as conn:
        rows = dict(conn.execute("SELECT id, content FROM stream_kfp_local").fetchall())
    assert rows == {"k1": "The first document, edited.", "k2": "The second document."}
    metrics = run.metadata(run.task("embed-stream"), "metrics")
    assert (metrics["messages_read"], metrics["dead_letters"], metrics["documents_deleted"]) == (6, 1, 1)
