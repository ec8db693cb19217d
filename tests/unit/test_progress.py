"""The progress reporter: throttled by time (the first line, then one per interval, then the last), rate
and ETA in its text, the mark a parent process finds it by."""

from __future__ import annotations

import logging

from embedpipe.progress import PROGRESS_MARK, Progress, format_seconds, progress_text, quiet_libraries


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(total=1000, interval=10.0):
    clock, lines = FakeClock(), []
    return (
        Progress("encode", total=total, unit="texts", clock=clock, interval=interval, emit=lines.append),
        clock,
        lines,
    )


def test_first_update_logs_then_at_most_one_line_per_interval_then_the_last():
    progress, clock, lines = reporter()
    clock.now += 1
    progress.update(10)
    assert len(lines) == 1  # the first
    for _ in range(9):  # 9 more updates within 9 s of the first line: throttled
        clock.now += 1
        progress.update(10)
    assert len(lines) == 1
    clock.now += 1  # 10 s after the first line
    progress.update(10)
    assert len(lines) == 2
    clock.now += 0.5
    progress.finish(5)
    assert len(lines) == 3  # the last, whatever the interval
    progress.finish()
    assert len(lines) == 3  # once only


def test_text_has_counts_percentage_rate_and_eta():
    progress, clock, lines = reporter(total=1000)
    clock.now += 4
    progress.update(200)
    assert lines[-1] == f"{PROGRESS_MARK} encode: 200/1,000 texts (20%), 50.0 texts/s, ETA 16 s"


def test_last_line_says_the_elapsed_time_instead_of_an_eta():
    progress, clock, lines = reporter(total=1000)
    clock.now += 125
    progress.finish(1000)
    assert lines[-1] == f"{PROGRESS_MARK} encode: 1,000/1,000 texts (100%), 8.0 texts/s, 2 min 5 s"


def test_unknown_total_has_no_percentage_nor_eta_and_figures_come_last():
    clock, lines = FakeClock(), []
    progress = Progress("embed", unit="texts", clock=clock, interval=10, emit=lines.append)
    clock.now += 2
    progress.update(300, loss=0.123456)
    assert lines[-1] == f"{PROGRESS_MARK} embed: 300 texts, 150 texts/s, loss 0.1235"


def test_the_first_line_waits_a_second_so_that_it_has_a_rate():
    progress, clock, lines = reporter(total=10)
    clock.now += 0.5
    progress.update(1)
    assert lines == []  # no rate to say yet
    clock.now += 1.0
    progress.update(4)
    assert lines == [f"{PROGRESS_MARK} encode: 5/10 texts (50%), 3.3 texts/s, ETA 2 s"]
    clock.now += 0.5
    progress.update(5)  # total reached: the last line at once (whatever the interval), and only once
    progress.finish()
    assert lines[1:] == [f"{PROGRESS_MARK} encode: 10/10 texts (100%), 5.0 texts/s, 2 s"]


def test_a_loop_done_within_a_second_says_nothing():
    progress, clock, lines = reporter(total=10)
    clock.now += 0.9
    progress.update(10)
    progress.finish()
    assert lines == []


def test_lines_go_through_logging_under_embedpipe(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="embedpipe.progress"):
        progress = Progress("rows", total=2, unit="rows", interval=10, clock=clock)
        clock.now += 2
        progress.finish(2)
    (record,) = caplog.records
    assert record.name == "embedpipe.progress" and record.getMessage().startswith(f"{PROGRESS_MARK} rows: 2/2 rows")


def test_progress_text_finds_the_line_behind_any_log_prefix():
    line = f"    [KFP Executor 12:00:01 INFO]: {PROGRESS_MARK} base: documents: 5/10 texts (50%)\n"
    assert progress_text(line) == f"{PROGRESS_MARK} base: documents: 5/10 texts (50%)"
    assert progress_text("INFO something else") is None


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 59, 61, 3600 + 240)] == ["0 s", "59 s", "1 min 1 s", "1 h 4 min"]


def test_quiet_libraries_unless_verbose(monkeypatch):
    logger = logging.getLogger("embedpipe_test_chatty")
    logger.setLevel(logging.INFO)
    monkeypatch.setenv("EMBEDPIPE_VERBOSE", "1")
    quiet_libraries("embedpipe_test_chatty")
    assert logger.level == logging.INFO
    monkeypatch.delenv("EMBEDPIPE_VERBOSE")
    quiet_libraries("embedpipe_test_chatty")
    assert logger.level == logging.WARNING
