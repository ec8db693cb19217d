"""Streaming mode of the embedding job, on Beam's local runner against the embedded Postgres + pgvector.

Pub/Sub cannot be reached from here: Beam's `TestStream` stands in for `ReadFromPubSub` (message bodies
as bytes, their publish times as timestamps, watermark advances closing the windows), run on Beam's
Python direct runner with `streaming=True`. Everything after the read is the job's own code.
"""

import json
import logging

import numpy as np
import pytest
from apache_beam.testing import test_stream as beam_test_stream
from apache_beam.transforms.window import TimestampedValue

from embedpipe.embed.settings import ModelSettings
from embedpipe.embed.streaming import (
    parse_message,
    plan_writes,
    prepare_stream_config,
    prepare_vector_table,
    run_stream,
)
from embedpipe.embed.types import VectorRow, Version
from embedpipe.models import ModelLoadError, load_model

SUBSCRIPTION = "projects/my-project/subscriptions/docs"
slow = pytest.mark.slow  # a model and a pipeline run each


@pytest.fixture(scope="module")
def model():
    return load_model("default", device="cpu")


def encode(model, texts):
    return model.encode(texts, prompt="", normalize_embeddings=True, batch_size=32)


def configure(pg_uri, table, **settings):
    """A config for the packaged MiniLM (384 dimensions), its table created as the launcher would."""
    config = prepare_stream_config(
        SUBSCRIPTION, database_uri=pg_uri, table=table, check_model=False, write_shards=2, **settings
    )
    config.dimension = 384
    prepare_vector_table(config)
    return config


def message(published: float, body) -> TimestampedValue:
    return TimestampedValue(body if isinstance(body, bytes) else json.dumps(body).encode(), published)


def stream(*steps):
    """Steps: a list of messages (delivered in that order), or a number (advance the watermark to it)."""
    messages = beam_test_stream.TestStream().advance_watermark_to(0)
    for step in steps:
        messages = (
            messages.advance_watermark_to(step) if isinstance(step, (int, float)) else messages.add_elements(step)
        )
    return messages.advance_watermark_to_infinity()


def stored(pg_uri, table) -> dict:
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(pg_uri) as conn:
        register_vector(conn)
        rows = conn.execute(f'SELECT id, embedding, content, metadata FROM "{table}"').fetchall()
    return {
        i: {"embedding": np.asarray(e.to_numpy(), dtype=np.float32), "content": c, "metadata": m}
        for i, e, c, m in rows
    }


@slow
def test_new_changed_and_deleted_documents_reach_the_table(pg_uri, model):
    config = configure(pg_uri, "stream_basic")
    first = [
        {"id": "a", "title": "Alpha", "text": "The first document is about the alphabet.", "metadata": {"lang": "en"}},
        {"_id": "b", "title": "Bravo", "text": "A second one, about radio call signs."},
        {"id": "c", "text": "Untitled text on pgvector indexes."},
    ]
    result = run_stream(
        config,
        source=stream(
            [message(1, first[0]), message(2, first[1]), message(3, first[2])],
            10,  # closes the window [0, 5): written
            [
                message(
                    11,
                    {
                        "id": "a",
                        "title": "Alpha v2",
                        "text": "The changed first document.",
                        "metadata": {"lang": "de"},
                    },
                ),
                message(12, {"id": "b", "delete": True}),
            ],
        ),
    )
    table = stored(pg_uri, "stream_basic")
    assert sorted(table) == ["a", "c"]
    assert table["a"]["content"] == "The changed first document."
    assert table["a"]["metadata"] == {"lang": "de", "title": "Alpha v2"}
    expected = encode(model, ["Alpha v2 The changed first document.", "Untitled text on pgvector indexes."])
    got = np.stack([table["a"]["embedding"], table["c"]["embedding"]])
    assert got.shape == (2, 384) and (got * expected).sum(axis=1).min() > 0.9999
    m = result.metrics
    assert (m["messages_read"], m["dead_letters"], m["messages_superseded"]) == (5, 0, 0)
    assert (m["documents_embedded"], m["documents_upserted"], m["documents_deleted"]) == (4, 4, 1)
    assert (m["database_rows_written"], m["database_rows_deleted"]) == (4, 1)
    assert result.state == "DONE"


@slow
def test_the_newest_message_for_an_id_in_one_window_wins(pg_uri, model):
    config = configure(pg_uri, "stream_newest")
    result = run_stream(
        config,
        source=stream(
            [
                # published later, delivered first: publish time decides, not arrival
                message(3, {"id": "x", "text": "x newer"}),
                message(1, {"id": "x", "text": "x older"}),
                # sequence beats publish time
                message(1, {"id": "y", "text": "y sequence 2", "sequence": 2}),
                message(2, {"id": "y", "text": "y sequence 1", "sequence": 1}),
                # updated_at beats publish time too
                message(1, {"id": "u", "text": "u noon", "updated_at": "2024-05-01T12:00:00Z"}),
                message(2, {"id": "u", "text": "u morning", "updated_at": "2024-05-01T09:00:00+00:00"}),
                # an upsert then a delete: gone; a delete then an upsert: there
                message(1, {"id": "z", "text": "z"}),
                message(2, {"id": "z", "delete": True}),
                message(1, {"id": "w", "delete": True}),
                message(2, {"id": "w", "text": "w back"}),
            ]
        ),
    )
    table = stored(pg_uri, "stream_newest")
    assert {i: row["content"] for i, row in table.items()} == {
        "x": "x newer",
        "y": "y sequence 2",
        "u": "u noon",
        "w": "w back",
    }
    expected = encode(model, ["x newer"])[0]
    assert float(table["x"]["embedding"] @ expected) > 0.9999
    m = result.metrics
    assert (m["messages_read"], m["messages_superseded"], m["documents_embedded"], m["documents_deleted"]) == (
        10,
        5,
        4,
        1,
    )


@slow
def test_bad_messages_are_counted_logged_dead_letters_and_the_good_ones_still_written(pg_uri, caplog):
    config = configure(pg_uri, "stream_bad")
    caplog.set_level(logging.WARNING, logger="embedpipe.embed.streaming")
    bad = [
        b"{not json",
        b'["a", "list"]',
        {"title": "no id", "text": "x"},
        {"id": "no-text", "title": "t"},
        {"id": "blank", "text": "   "},
        {"id": "flag", "text": "t", "delete": "yes"},
        {"id": "seq", "text": "t", "sequence": "2"},
        {"id": "when", "text": "t", "updated_at": "yesterday"},
        {"delete": True},
    ]
    good = [{"id": "g1", "text": "good one"}, {"id": "g2", "text": "good two"}, {"id": "g1-gone", "delete": True}]
    result = run_stream(config, source=stream([message(1, body) for body in bad + good]))
    assert sorted(stored(pg_uri, "stream_bad")) == ["g1", "g2"]
    m = result.metrics
    assert (m["messages_read"], m["dead_letters"], m["documents_upserted"], m["documents_deleted"]) == (12, 9, 2, 1)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter")]
    assert len(logged) == 9
    for reason in (
        "invalid JSON: Expecting property name enclosed in double quotes at column 2",
        "expected a JSON object",
        "field '_id' is missing",
        "(id no-text): field 'text' is missing",
        "(id blank): field 'text' is empty",
        "(id flag): field 'delete' must be true or false, got 'yes'",
        "(id seq): field 'sequence' must be an integer",
        "(id when): field 'updated_at' must be an RFC 3339 time",
    ):
        assert any(reason in line for line in logged), reason


@slow
def test_chunked_documents_lose_their_vanished_chunks_and_a_delete_removes_them_all(pg_uri, model):
    config = configure(pg_uri, "stream_chunks", chunk_tokens=16, chunk_overlap=4)
    long_text = " ".join(f"word{i}" for i in range(40))
    run_stream(
        config,
        source=stream(
            [
                message(1, {"id": "long", "title": "Long", "text": long_text}),
                message(1, {"id": "other", "text": long_text}),
            ],
            10,
            [
                message(11, {"id": "long", "title": "Long", "text": "now short"}),
                message(12, {"id": "other", "delete": True}),
            ],
        ),
    )
    table = stored(pg_uri, "stream_chunks")
    assert sorted(table) == ["long#0"]
    assert table["long#0"]["content"] == "now short"
    assert table["long#0"]["metadata"] == {"title": "Long", "document_id": "long", "chunk": 0}
    assert float(table["long#0"]["embedding"] @ encode(model, ["Long now short"])[0]) > 0.9999


@slow
def test_first_window_of_chunks_has_every_chunk(pg_uri, model):
    config = configure(pg_uri, "stream_chunks_first", chunk_tokens=16, chunk_overlap=4)
    long_text = " ".join(f"word{i}" for i in range(40))
    run_stream(config, source=stream([message(1, {"id": "long", "title": "Long", "text": long_text})]))
    table = stored(pg_uri, "stream_chunks_first")
    tokens = model.tokenizer(long_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks = len(range(0, len(tokens) - 4, 12))
    assert chunks > 2 and sorted(table) == sorted(f"long#{i}" for i in range(chunks))
    contents = [table[f"long#{i}"]["content"] for i in range(chunks)]
    got = np.stack([table[f"long#{i}"]["embedding"] for i in range(chunks)])
    assert (got * encode(model, [f"Long {c}" for c in contents])).sum(axis=1).min() > 0.9999


@slow
def test_a_late_message_is_still_written(pg_uri):
    config = configure(pg_uri, "stream_late")
    result = run_stream(
        config,
        source=stream(
            [message(1, {"id": "on-time", "text": "on time"})],
            30,  # the window [0, 5) has been written
            [message(2, {"id": "late", "text": "published at 2 s, delivered after the watermark passed 30 s"})],
        ),
    )
    assert sorted(stored(pg_uri, "stream_late")) == ["late", "on-time"]
    assert result.metrics["documents_upserted"] == 2


@slow
def test_a_model_folder_that_does_not_load_and_a_table_of_another_dimension_are_clear_errors(tmp_path, pg_uri):
    from embedpipe.validation import DataValidationError

    with pytest.raises(ModelLoadError, match="neither modules.json nor config.json"):
        prepare_stream_config(SUBSCRIPTION, database_uri=pg_uri, model=str(tmp_path))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # no weights, no tokenizer
    with pytest.raises(ModelLoadError, match="could not load model"):
        prepare_stream_config(SUBSCRIPTION, database_uri=pg_uri, model=str(broken), table="stream_never")
    assert "stream_never" not in _tables(pg_uri)

    prepare_stream_config(
        SUBSCRIPTION, database_uri=pg_uri, table="stream_dim", model=ModelSettings(output_dimensionality=128)
    )
    with pytest.raises(DataValidationError, match="holds 128-dimensional vectors; these have 384"):
        prepare_stream_config(SUBSCRIPTION, database_uri=pg_uri, table="stream_dim")


def _tables(pg_uri) -> set:
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}


@pytest.mark.parametrize(
    "settings, error",
    [
        (dict(), "give --subscription"),
        (dict(subscription="my-sub"), "must look like projects/PROJECT/subscriptions/NAME"),
        (dict(subscription="projects/p/subscriptions/s"), "Invalid PubSub project name: 'p'"),
        (dict(subscription=SUBSCRIPTION, topic="projects/my-project/topics/t"), "not both"),
        (dict(subscription=SUBSCRIPTION, database_uri=""), "give database_uri"),
        (dict(subscription=SUBSCRIPTION, window_seconds=0), "window_seconds must be positive"),
        (dict(subscription=SUBSCRIPTION, chunk_tokens=8, chunk_overlap=8), "must be smaller than chunk_tokens"),
        (dict(subscription=SUBSCRIPTION, table="x; drop table y"), "x; drop table y"),
    ],
)
def test_bad_settings_fail_before_anything_runs(settings, error):
    settings = {"database_uri": "postgresql://localhost/db", **settings}
    with pytest.raises(ValueError, match=error):
        prepare_stream_config(**settings, check_model=False, prepare_table=False)


# -- no model, no database ---------------------------------------------------------------------------


def test_parse_message_orders_versions_and_explains_bad_ones():
    upsert = parse_message(b'{"_id": 7, "title": "T", "text": "x", "sequence": 3}', 1_000)
    assert upsert.id == "7" and not upsert.delete and upsert.document.title == "T"
    assert upsert.order[:5] == (True, 3, False, 0.0, 1_000)
    delete = parse_message(b'{"id": "d", "delete": true, "updated_at": "2024-05-01T00:00:00Z"}', 5)
    assert delete.document is None and delete.order[2:4] == (True, 1714521600.0)
    assert parse_message(b'{"id": "d", "text": "t", "updated_at": "2024-05-01T00:00:00"}').reason.endswith(
        "no time zone; write it like 2024-05-01T12:00:00Z"
    )
    assert parse_message(b"\xff\xfe").reason.startswith("invalid JSON")


def _row(doc_id, text, digest, chunk=None):
    meta = {"document_id": doc_id, "chunk": chunk} if chunk is not None else {}
    row_id = doc_id if chunk is None else f"{doc_id}#{chunk}"
    return ("row", VectorRow(row_id, [1.0, 0.0], text, json.dumps(meta), digest))


def test_plan_writes_keeps_the_newest_version_when_a_late_message_meets_its_window():
    older, newer = (False, 0, False, 0.0, 1, 0, "a"), (False, 0, False, 0.0, 2, 0, "b")
    ops = [
        _row("d", "old chunk 0", "h-old", 0),
        _row("d", "old chunk 1", "h-old", 1),
        _row("d", "new chunk 0", "h-new", 0),
        ("version", Version("d", older, "h-old")),
        ("version", Version("d", newer, "h-new")),
        # a newer delete wins over rows that are here
        _row("e", "e", "h-e", 0),
        ("version", Version("e", older, "h-e")),
        ("version", Version("e", newer, None)),
        # rows whose version record came with an earlier write; an upsert whose rows are not here yet
        _row("f", "f", "h-f", 0),
        ("version", Version("g", older, "h-g")),
    ]
    plan = plan_writes(ops, chunked=True)
    assert [r.content for r in plan.rows] == ["new chunk 0", "f"]
    assert plan.upserted == ["d", "f"] and plan.deleted == ["e"]


def test_command_line_builds_dataflow_streaming_options_and_reads_the_subscription():
    import apache_beam as beam
    from apache_beam.io.gcp.pubsub import ReadFromPubSub
    from apache_beam.options.pipeline_options import PipelineOptions

    from embedpipe.embed.streaming import build_stream_pipeline, config_and_args_from_argv, main
    from embedpipe.images import DATAFLOW_IMAGE

    config, beam_args = config_and_args_from_argv(
        [
            "--subscription",
            SUBSCRIPTION,
            "--database-uri",
            "postgresql://10.0.0.5/db",
            "--table",
            "docs",
            "--runner",
            "DataflowRunner",
            "--project",
            "p",
            "--region",
            "europe-west4",
            "--temp-location",
            "gs://b/tmp",
            "--accelerator-type",
            "nvidia-l4",
            "--streaming",
            "--skip-model-check",
            "--skip-table-check",
            "--dead-letter-topic",
            "projects/my-project/topics/dead",
            "--window-seconds",
            "2",
            "--experiments=enable_streaming_engine",
        ]
    )
    assert {
        "--runner=DataflowRunner",
        "--project=p",
        "--region=europe-west4",
        "--streaming",
        "--sdk_location=container",
        f"--sdk_container_image={DATAFLOW_IMAGE}",
        "--experiments=enable_streaming_engine",
    } <= set(beam_args)
    assert any(a.startswith("--job_name=embed-stream-") for a in beam_args)
    assert config.embed.model_settings.share_across_processes and config.window_seconds == 2 and config.table == "docs"

    pipeline = beam.Pipeline(options=PipelineOptions([], streaming=True))
    build_stream_pipeline(pipeline, config)  # the graph only: nothing runs, Pub/Sub is not reachable here
    reads = [t.transform for t in pipeline.transforms_stack[0].parts if isinstance(t.transform, ReadFromPubSub)]
    assert len(reads) == 1 and reads[0]._source.full_subscription == SUBSCRIPTION
    assert main(["--subscription", "my-sub", "--database-uri", "postgresql://x/db"]) == 2
