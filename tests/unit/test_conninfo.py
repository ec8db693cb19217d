"""Connection strings: one parser (psycopg's) refuses and redacts a password in every form libpq reads."""

import json
import subprocess
import sys
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from embedpipe.cli import exits
from embedpipe.vectorstore.connections import ConnectionSettings, redact_uri
from embedpipe.vectorstore.conninfo import (
    UNPARSEABLE,
    ConnectionConfigError,
    check_no_password,
    parse_connection_string,
    redact_connection_string,
)
from embedpipe.vectorstore.upload import UploadConfig

WITH_SECRET = [
    # (connection string, the secret as libpq reads it, the keys that carry one)
    ("host=db user=u password=hunter2 dbname=x", "hunter2", ("password",)),
    ("host=db password='two words' dbname=x", "two words", ("password",)),
    (r"host=db password='it\'s a secret' dbname=x", "it's a secret", ("password",)),
    ("  host=db   password = spaced  ", "spaced", ("password",)),
    ("postgresql://u:hunter2@db:5432/x", "hunter2", ("password",)),
    ("postgres://u:hunter2@db/x", "hunter2", ("password",)),
    ("postgresql://u@db/x?password=hunter2&sslmode=require", "hunter2", ("password",)),
    ("postgresql:///x?host=/tmp/sock&password=hunter2", "hunter2", ("password",)),
    ("postgresql://u:p%40ss%2Fw%3Frd@db/x", "p@ss/w?rd", ("password",)),
    ("postgresql://u@db/x?password=two%20words", "two words", ("password",)),
    ("postgresql://u:hunter2@h1:5432,h2:5433/x?target_session_attrs=read-write", "hunter2", ("password",)),
    ("postgresql://u:pa?ss@db/x", "pa?ss", ("password",)),
    ("host=db sslkey=/k.pem sslpassword=keypass", "keypass", ("sslpassword",)),
    ("postgresql://u:hunter2@db/x?sslpassword=keypass", "hunter2", ("password", "sslpassword")),
]


@pytest.mark.parametrize(("text", "secret", "keys"), WITH_SECRET)
def test_a_password_in_any_form_is_found_and_redacted(text, secret, keys):
    parsed = parse_connection_string(text)
    assert parsed.has_password and parsed.secrets == keys
    assert secret not in parsed.redacted and quote(secret, safe="") not in parsed.redacted
    settings = conninfo_to_dict(parsed.redacted)  # what is printed still reads as the same settings
    original = conninfo_to_dict(text)
    assert {k: v for k, v in settings.items() if k not in keys} == {k: v for k, v in original.items() if k not in keys}
    assert all(settings[key] == "***" for key in keys)
    with pytest.raises(ConnectionConfigError, match="password in clear") as refused:
        check_no_password(text, what="--database-uri")
    assert secret not in str(refused.value) and "--database-uri" in str(refused.value)
    assert "password_env" in str(refused.value) and "password_secret" in str(refused.value)


def test_a_uri_keeps_its_form_when_redacted():
    assert redact_uri("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_connection_string("postgres://u@db/x?password=a&sslmode=require") == (
        "postgres://u@db/x?password=***&sslmode=require"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host=db user=u dbname=x",
        "host=db passfile=/home/u/.pgpass dbname=x",  # where the password is, not the password
        "host=db password='' dbname=x",  # an empty password is no secret
        "postgresql://postgres:@/postgres?host=/tmp/pg",  # the embedded database's URI
        "postgresql://u@db:5432/x?sslmode=verify-full&sslrootcert=/ca.pem",
    ],
)
def test_no_password_is_accepted_and_printed_as_it_is(text):
    assert check_no_password(text) == text
    parsed = parse_connection_string(text)
    assert not parsed.has_password and parsed.redacted == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("host=db password", 'missing "=" after "password"'),
        ("hunter2", "missing"),
        ("host='db password=hunter2", "unterminated quoted string"),
        ("host=db password=hunter2 hunter3=x", "invalid connection option"),
        ('"postgresql://u:hunter2@db/x', "missing"),  # libpq quotes it with the quote inside
        ('host=db password" in connection info string "hunter2', "missing"),
        ("postgresql://u@db/x?hunter2=x", "invalid URI query parameter"),
        ("postgresql://u:%zzhunter2@db/x", "invalid percent-encoded token"),
        ("mysql://u:hunter2@db/x", "missing"),
        ("\x00host=db password=hunter2", "NUL character"),  # libpq would read nothing after the NUL
    ],
)
def test_an_unparseable_string_is_named_never_echoed(text, reason):
    with pytest.raises(ConnectionConfigError, match="cannot parse") as failed:
        parse_connection_string(text, what="database_uri")
    message = str(failed.value)
    assert reason in message and message.startswith("database_uri:")
    assert "hunter" not in message and "zz" not in message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # no psycopg traceback below it
    assert redact_connection_string(text) == UNPARSEABLE


def test_upload_refuses_the_key_value_form_and_describes_connections_redacted():
    with pytest.raises(ConnectionConfigError, match="password in clear") as refused:
        UploadConfig(database_uri="host=db user=u password=hunter2 dbname=x").check()
    assert "hunter2" not in str(refused.value)
    allowed = UploadConfig(database_uri="host=db user=u password=hunter2 dbname=x", allow_password_in_uri=True)
    assert allowed.check().connection().describe() == "user=u password=*** dbname=x host=db"
    with pytest.raises(ConnectionConfigError, match="cannot parse"):
        ConnectionSettings(uri="host=db password").check()


def test_the_embed_job_and_the_stream_refuse_a_password_before_any_other_check(tmp_path):
    from embedpipe.embed.job import prepare_config
    from embedpipe.embed.streaming.config import prepare_stream_config

    # The corpus and the model do not exist: the password is refused first, before either is looked at.
    with pytest.raises(ConnectionConfigError, match="password in clear") as refused:
        prepare_config(
            str(tmp_path / "missing.jsonl"),
            str(tmp_path / "out"),
            model="/no/model",
            database_uri="host=h password=hunter2",
        )
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConnectionConfigError, match="password in clear") as refused:
        prepare_stream_config(
            "projects/p/subscriptions/s", database_uri="postgresql://u:hunter2@h/db", model="/no/model"
        )
    assert "hunter2" not in str(refused.value)


RUN_AND_REPORT = """
import json, sys
from embedpipe.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("apache_beam", "kfp", "torch", "sentence_transformers") if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--database-uri", "host=db user=u password=hunter2 dbname=x"],
        ["run", "--database-uri=postgresql://u:hunter2@db/x"],
        ["run", "--database-uri", "postgresql://u@db/x?password=hunter2"],
        ["run", "--database-uri", "host=db password=hunter2 unknown"],  # cannot parse: not echoed either
        ["embed", "--input", "c.jsonl", "--output", "v", "--database-uri", "postgres://u:hunter2@db/x"],
        ["stream", "--subscription", "projects/p/subscriptions/s", "--database-uri", "host=h password=hunter2"],
        ["search", "a question", "--db", "postgresql://u:hunter2@db/x"],
    ],
)
def test_the_cli_refuses_before_any_work_and_prints_no_secret(tmp_path, argv):
    argv = [*argv, "--output-dir", str(tmp_path / "runs")] if argv[0] == "run" else argv
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"rc": exits.BAD_INPUT, "heavy": []}, (
        done.stderr
    )  # nothing heavy loaded: no pipeline, no model, no job
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "password_env" in done.stderr or "cannot parse" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # no run folder, no report, no log file
