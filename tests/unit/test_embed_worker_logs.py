"""The console of a local multi-process embedding job: the lines embedpipe logs inside Beam's worker processes
reach it, the workers' other INFO lines do not, and records that are not worker lines pass as they were."""

import logging
from pathlib import Path

import pytest

from embedpipe.embed import handler
from embedpipe.embed.worker_logs import BEAM_WORKER_LOGGER, WorkerLines

beam_fn_api_pb2 = pytest.importorskip("apache_beam.portability.api", reason="needs embedpipe[local]").beam_fn_api_pb2


def forwarded(message: str, location: str, level: int = logging.INFO) -> logging.LogRecord:
    """The record Beam's local job service logs for one worker line (one line: newlines become spaces)."""
    entry = beam_fn_api_pb2.LogEntry(message=message, log_location=location, thread="MainThread")
    entry.severity = {logging.INFO: entry.Severity.INFO, logging.WARNING: entry.Severity.WARN}[level]
    return logging.LogRecord(
        BEAM_WORKER_LOGGER, level, __file__, 1, "Worker: %s", (str(entry).replace("\n", " "),), None
    )


def test_a_line_of_embedpipe_code_in_a_worker_shows_as_the_worker_wrote_it():
    record = forwarded(
        "[progress] worker 1234: documents: 500 texts, 8.7 texts/s 「東京」\n(second line)",
        f"{handler.__file__}:120",  # where the workers import embedpipe from: where this process does
    )
    assert WorkerLines().filter(record)
    assert record.getMessage() == "[progress] worker 1234: documents: 500 texts, 8.7 texts/s 「東京」\n(second line)"
    assert record.name == "worker embedpipe.embed.handler"


def test_the_workers_other_info_lines_stay_hidden_unless_verbose_warnings_show():
    chatter = forwarded("Creating insecure state channel for localhost:1234.", "/apache_beam/runners/worker/x.py:9")
    assert not WorkerLines().filter(chatter)
    assert WorkerLines(keep_all=True).filter(chatter) and chatter.name == "worker"
    # Beam's own file, installed in a virtual environment inside a checkout folder named "embedpipe".
    venv = Path("/home/me/embedpipe/.venv/lib/python3.11/site-packages/apache_beam/runners/worker/sdk_worker.py")
    assert not WorkerLines().filter(forwarded("Created Worker handler", f"{venv}:88"))
    warning = forwarded("Discarding unparseable args", "/apache_beam/options/pipeline_options.py:3", logging.WARNING)
    assert WorkerLines().filter(warning) and warning.getMessage() == "Discarding unparseable args"


def test_records_that_are_not_worker_lines_pass_unchanged():
    record = logging.LogRecord(
        BEAM_WORKER_LOGGER, logging.INFO, __file__, 1, "Grpc server started at %s", ("h",), None
    )
    assert not WorkerLines().filter(record)  # Beam's own INFO: hidden, as the quietened logger did before
    record.levelno = logging.WARNING
    assert WorkerLines().filter(record) and record.getMessage() == "Grpc server started at h"
    broken = logging.LogRecord(
        BEAM_WORKER_LOGGER, logging.WARNING, __file__, 1, "Worker: %s", ("not { a LogEntry",), None
    )
    assert WorkerLines().filter(broken) and broken.getMessage() == "Worker: not { a LogEntry"
