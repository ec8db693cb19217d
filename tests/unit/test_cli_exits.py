"""`embedpipe`'s exit statuses: one meaning each (`embedpipe.cli.exits`), as `main` answers errors."""

from __future__ import annotations

import pytest

import embedpipe.cli
from embedpipe.cli import exits, main
from embedpipe.validation import DataValidationError
from embedpipe.vectorstore.conninfo import ConnectionConfigError


def test_the_statuses_are_distinct_and_each_has_a_meaning():
    statuses = [exits.OK, exits.RUN_FAILED, exits.USAGE, exits.BAD_INPUT, exits.GATE_FAILED, exits.MISSING]
    assert len(set(statuses)) == len(statuses)
    assert sorted(exits.EXIT_CODES) == sorted(statuses) and all(exits.EXIT_CODES.values())
    assert exits.USAGE == 2  # argparse's own: it exits with 2 on a bad flag, before `main` can say anything


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DataValidationError([]), exits.BAD_INPUT),
        (FileNotFoundError("no.jsonl"), exits.BAD_INPUT),
        (ValueError("bad"), exits.BAD_INPUT),
        (ConnectionConfigError("password in clear"), exits.BAD_INPUT),
        (RuntimeError("a bug"), None),  # let through: a traceback, not a one-line answer
        (KeyboardInterrupt(), None),
    ],
)
def test_errors_map_to_their_status(error, status):
    assert embedpipe.cli.exit_status_of(error) == status


def test_a_missing_file_is_bad_input_said_in_one_line(tmp_path, capsys):
    status = main(["prepare", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")])
    assert status == exits.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("embedpipe prepare: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["prepare", "--no-such-flag"])
    assert exited.value.code == exits.USAGE
    with pytest.raises(SystemExit) as exited:
        main(["no-such-command"])
    assert exited.value.code == exits.USAGE
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_a_password_in_clear_is_bad_input_before_the_parser_is_built(capsys):
    status = main(["embed", "--input", "c.jsonl", "--output", "v", "--database-uri", "postgresql://u:pw1@h/db"])
    assert status == exits.BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("embedpipe embed: ") and "pw1" not in err


@pytest.mark.slow
def test_evaluate_answers_a_failed_quality_gate_with_its_status_and_keeps_the_report(tmp_path, tiny_example_data):
    """The same model as base and tuned: it passes a margin of 0 and cannot pass one of 2 (NDCG is at most 1)."""
    argv = ["evaluate", "--data", str(tiny_example_data), "--tuned-model", "default"]
    assert main([*argv, "--output-dir", str(tmp_path / "passes"), "--margin", "0"]) == exits.OK
    failed = tmp_path / "fails"
    assert main([*argv, "--output-dir", str(failed), "--margin", "2"]) == exits.GATE_FAILED
    assert (failed / "report.html").is_file() and (failed / "per_query.parquet").is_file()
