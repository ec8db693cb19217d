"""The streaming job's stale messages (dead letters, counted) and its writes through the AlloyDB connector.

Beam's `TestStream` stands in for Pub/Sub and a fake connector (handing out real pg8000 connections to the
embedded Postgres) for AlloyDB's, as in tests/unit/test_vectorstore_targets.py.
"""

import logging
import uuid

import pytest

from embedpipe.embed.streaming import prepare_stream_config, prepare_vector_table, run_stream
from embedpipe.embed.streaming.planning import given_version, stale_reason
from embedpipe.vectorstore import ConnectionSettings
from embedpipe.vectorstore.connections import ConnectionConfigError
from embedpipe.vectorstore.versions import stored_versions
from tests.unit.test_embed_streaming import SUBSCRIPTION, configure, message, stored, stream
from tests.unit.test_vectorstore_targets import FakeConnector, FakeSecrets

ALLOYDB = "projects/p/locations/us-central1/clusters/c/instances/i"


def test_stale_reason_compares_sequence_then_updated_at_and_equal_is_not_stale():
    assert stale_reason((3, None), (5, None, False)).startswith("stale version: sequence 3 is older than sequence 5")
    assert stale_reason((6, 0.0), (5, 99.0, False)) == ""  # a newer sequence wins over an older time
    assert stale_reason((5, 10.0), (5, 20.0, False)).startswith("stale version: updated_at 1970-01-01T00:00:10Z")
    assert stale_reason((5, 20.0), (5, 20.0, True)) == ""  # the same version again (a redelivery)
    assert stale_reason((None, None), (5, None, False)) == "" and stale_reason((1, None), None) == ""
    assert stale_reason((None, 5.0), (3, None, False)) == ""  # nothing in common to compare
    assert given_version((True, 7, False, 0.0, 123, 0, "")) == (7, None)


@pytest.mark.slow
def test_stale_messages_are_dead_letters_with_the_reason_and_counted(pg_uri, caplog):
    config = configure(pg_uri, "stream_stale")
    caplog.set_level(logging.WARNING, logger="embedpipe.embed.streaming")
    result = run_stream(
        config,
        source=stream(
            [
                message(1, {"id": "a", "text": "alpha five", "sequence": 5}),
                message(2, {"id": "b", "text": "bravo of May 2nd", "updated_at": "2024-05-02T00:00:00Z"}),
                message(3, {"id": "c", "text": "charlie two", "sequence": 2}),
                message(4, {"id": "d", "text": "delta, no version"}),
            ],
            10,
            [
                message(11, {"id": "a", "text": "alpha three (old)", "sequence": 3}),
                message(12, {"id": "b", "text": "bravo of May 1st (old)", "updated_at": "2024-05-01T00:00:00Z"}),
                message(13, {"id": "c", "delete": True, "sequence": 3}),
                message(14, {"id": "d", "text": "delta again, no version"}),
            ],
            20,
            [
                message(21, {"id": "c", "text": "charlie two, redelivered after its delete", "sequence": 2}),
                message(22, {"id": "a", "text": "alpha five", "sequence": 5}),  # redelivered: not stale
            ],
        ),
    )
    table = stored(pg_uri, "stream_stale")
    assert {i: row["content"] for i, row in table.items()} == {
        "a": "alpha five",
        "b": "bravo of May 2nd",
        "d": "delta again, no version",
    }
    m = result.metrics
    assert (m["messages_read"], m["dead_letters"], m["messages_stale"], m["documents_deleted"]) == (10, 3, 3, 1)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter")]
    assert len(logged) == 3
    for reason in (
        "(id a): stale version: sequence 3 is older than sequence 5",
        "(id b): stale version: updated_at 2024-05-01T00:00:00Z is older than 2024-05-02T00:00:00Z",
        "(id c): stale version: sequence 2 is older than sequence 3",
    ):
        assert any(reason in line for line in logged), reason
    from embedpipe.vectorstore import PgVectorWriter

    versions = stored_versions(PgVectorWriter(pg_uri, "stream_stale"), ["a", "b", "c", "d"])
    assert versions["a"].sequence == 5 and versions["c"] == (3, None, True) and "d" not in versions


def alloydb(pg_uri, secrets, **settings):
    return ConnectionSettings(
        target="alloydb",
        instance=ALLOYDB,
        user="embedpipe",
        password_secret="projects/p/secrets/db-password",
        connector_factory=lambda **kw: FakeConnector(pg_uri, **kw),
        secret_client=secrets,
        **settings,
    )


@pytest.mark.slow
def test_the_streaming_writer_reaches_alloydb_through_the_connection_layer(pg_uri):
    table = f"stream_alloydb_{uuid.uuid4().hex[:8]}"
    secrets = FakeSecrets()
    FakeConnector.made.clear()
    config = prepare_stream_config(
        SUBSCRIPTION, connection=alloydb(pg_uri, secrets), table=table, check_model=False, write_shards=1
    )
    config.dimension = 384
    prepare_vector_table(config)
    result = run_stream(
        config,
        source=stream(
            [
                message(1, {"id": "x", "text": "first over pg8000", "sequence": 2}),
                message(2, {"id": "y", "text": "second over pg8000"}),
            ],
            10,
            [message(11, {"id": "x", "text": "older", "sequence": 1}), message(12, {"id": "y", "delete": True})],
        ),
    )
    assert {i: r["content"] for i, r in stored(pg_uri, table).items()} == {"x": "first over pg8000"}
    assert (result.metrics["messages_stale"], result.metrics["documents_deleted"]) == (1, 1)
    calls = [call for connector in FakeConnector.made for call in connector.calls]
    assert calls and {(instance, driver) for instance, driver, _ in calls} == {(ALLOYDB, "pg8000")}
    assert all(kwargs["password"] == "s3cret" and kwargs["user"] == "embedpipe" for _, _, kwargs in calls)
    assert set(secrets.names) == {"projects/p/secrets/db-password/versions/latest"}


def test_a_password_in_clear_or_bad_connection_settings_are_refused_before_anything_runs():
    with pytest.raises(ConnectionConfigError, match="carries a password in clear") as err:
        prepare_stream_config(
            SUBSCRIPTION, connection=ConnectionSettings(uri="postgresql://u:hunter2@db/x"), check_model=False
        )
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConnectionConfigError, match="must look like projects/P/locations/L/clusters/C/instances/I"):
        prepare_stream_config(
            SUBSCRIPTION, connection=ConnectionSettings(target="alloydb", instance="i"), check_model=False
        )


# -- the command line: `embedpipe embed-stream` (alias `stream`) ---------------------------------------------


def test_connection_flags_reach_the_connection_layer_and_dataflow_refuses_what_workers_cannot_use(capsys):
    from embedpipe.cli import exits, main
    from embedpipe.embed.streaming import config_and_args_from_argv

    dataflow = ["--runner", "DataflowRunner", "--project", "p", "--temp-location", "gs://b/tmp"]
    checks = ["--skip-model-check", "--skip-table-check"]
    config, beam_args = config_and_args_from_argv(
        ["--subscription", SUBSCRIPTION, "--target", "alloydb", "--instance", ALLOYDB, "--user", "embedpipe"]
        + ["--password-secret", "projects/p/secrets/db-password", "--ip-type", "PSC", *dataflow, *checks]
    )
    assert isinstance(config.database, ConnectionSettings)
    assert (config.database.target, config.database.instance, config.database.ip_type) == ("alloydb", ALLOYDB, "PSC")
    assert config.database.password_secret == "projects/p/secrets/db-password" and "--streaming" in beam_args

    for flags, error in [
        (
            ["--target", "alloydb", "--instance", ALLOYDB, "--password-env", "PGPASS"],
            "would be read on the Dataflow workers",
        ),
        (["--database-uri", ""], "the embedded local database: Dataflow workers cannot reach it"),
        (["--messages", "changes.jsonl", "--database-uri", "postgresql://h/db"], "read on the local runner only"),
    ]:
        assert main(["embed-stream", "--subscription", SUBSCRIPTION, *flags, *dataflow, *checks]) == exits.BAD_INPUT
        assert error in capsys.readouterr().err
    assert (
        main(["stream", "--database-uri", "host=h password=hunter2", "--subscription", SUBSCRIPTION])
        == exits.BAD_INPUT
    )
    err = capsys.readouterr().err
    assert "carries a password in clear" in err and "hunter2" not in err


@pytest.mark.slow
def test_embed_stream_plays_a_file_of_messages_into_the_table(tmp_path, pg_uri, capsys):
    from embedpipe.cli import main

    lines = [
        '{"id": "m1", "text": "one", "sequence": 1}',
        '{"id": "m2", "text": "two"}',
        '{"text": "no id"}',
        '{"id": "m1", "text": "one, newer", "sequence": 2}',
    ]
    (tmp_path / "changes.jsonl").write_text("\n".join(lines) + "\n")
    status = main(
        ["embed-stream", "--messages", str(tmp_path / "changes.jsonl"), "--database-uri", pg_uri]
        + ["--table", "stream_cli", "--write-shards", "1"]
    )
    assert status == 0
    assert {i: r["content"] for i, r in stored(pg_uri, "stream_cli").items()} == {"m1": "one, newer", "m2": "two"}
    out = capsys.readouterr().out
    assert "messages_read 4" in out and "dead_letters 1" in out and "messages_superseded 1" in out
