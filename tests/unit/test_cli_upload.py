"""`embedpipe upload VECTORS`: the component's upload from the command line, against the embedded PostgreSQL."""

import re
import uuid

import numpy as np
import psycopg
import pytest

from embedpipe import cli
from embedpipe.cli import exits, upload
from embedpipe.vectorstore import VectorBatch, write_parquet_vectors
from embedpipe.vectorstore import upload as library
from tests.unit.test_vectorstore import make_batch


@pytest.fixture
def table():
    return f"u_{uuid.uuid4().hex[:10]}"


def with_nan_in_row_1():
    batch = make_batch(3)
    batch.embeddings[1, 2] = np.nan
    return batch


def ids_in(uri, table):
    with psycopg.connect(uri) as conn:
        return sorted(row[0] for row in conn.execute(f'SELECT id FROM "{table}"'))


def test_the_command_offers_the_library_targets_and_modes(capsys):
    assert upload.TARGETS == library.TARGETS
    with pytest.raises(SystemExit) as exited:
        cli.main(["upload", "vectors", "--write-mode", "replace"])
    assert exited.value.code == exits.USAGE  # argparse's own: a bad flag value
    assert "'snapshot', 'append'" in capsys.readouterr().err


def test_upload_appends_then_snapshots_and_prints_the_counts(pg_uri, table, tmp_path, capsys):
    first = write_parquet_vectors(make_batch(6), tmp_path / "first" / "vectors-00000-of-00001.parquet")
    assert cli.main(["upload", str(first.parent), "--db", pg_uri, "--table", table]) == 0
    printed = capsys.readouterr().out
    assert f"table: `{table}`" in printed and "write mode: **append**" in printed and "- inserted: 6" in printed
    assert ids_in(pg_uri, table) == [f"d{i}" for i in range(6)]

    fewer = write_parquet_vectors(make_batch(4), tmp_path / "fewer.parquet")  # d4, d5 left out
    assert cli.main(["upload", str(fewer), "--db", pg_uri, "--table", table, "--write-mode", "append"]) == 0
    assert "- deleted: 0" in capsys.readouterr().out
    assert ids_in(pg_uri, table) == [f"d{i}" for i in range(6)]
    assert cli.main(["upload", str(fewer), "--db", pg_uri, "--table", table, "--write-mode", "snapshot"]) == 0
    printed = capsys.readouterr().out
    assert "write mode: **snapshot**" in printed and "- deleted: 2" in printed and "- unchanged: 4" in printed
    assert ids_in(pg_uri, table) == [f"d{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", r"vectors .*missing do not exist"),
        (lambda d: (d / "x.parquet").write_text("id,embedding\n") and d / "x.parquet", r"x\.parquet.*not a parquet"),
        (lambda d: write_parquet_vectors(with_nan_in_row_1(), d / "nan.parquet"), r"id 'd1'.*NaN"),
        (
            lambda d: write_parquet_vectors(VectorBatch([], np.zeros((0, 8), "float32"), [], []), d / "e.parquet"),
            r"snapshot' with no rows would delete every row of table .*TRUNCATE",
        ),
    ],
    ids=["missing", "not-parquet", "nan-row", "empty-snapshot"],
)
def test_bad_input_exits_with_bad_input_and_a_clear_message_and_writes_nothing(
    pg_uri, table, tmp_path, capsys, make, message
):
    path = make(tmp_path)
    status = cli.main(["upload", str(path), "--db", pg_uri, "--table", table, "--write-mode", "snapshot"])
    err = capsys.readouterr().err
    assert status == exits.BAD_INPUT
    assert err.startswith("embedpipe upload: ") and "Traceback" not in err
    assert re.search(message, err, re.S), err
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None


@pytest.mark.parametrize("flag", ["--db", "--db="])
def test_a_password_in_the_uri_is_refused_and_never_printed(tmp_path, capsys, flag):
    vectors = write_parquet_vectors(make_batch(2), tmp_path / "v.parquet")
    uri = "postgresql://writer:s3cret-pw@db.example.com/vectors"
    argv = ["upload", str(vectors), flag, uri] if flag == "--db" else ["upload", str(vectors), flag + uri]
    assert cli.main(argv) == exits.BAD_INPUT
    captured = capsys.readouterr()
    assert "password" in captured.err and "--db" in captured.err
    assert "s3cret-pw" not in captured.err + captured.out
