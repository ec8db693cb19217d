"""`embedpipe run`'s console filter on kfp.local's output: stage lines with times and figures, progress lines
without their mark, a failing task's last lines, everything in the log file."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from embedpipe.local_console import LOG_NAME, TAIL_LINES, RunConsole, display_path, stage_figure, watched_run

CYAN, GREEN, RED, RESET = "\033[96m", "\033[92m", "\033[91m", "\033[0m"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def write_output(run_dir, task, metrics=None, params=None):
    (run_dir / task).mkdir(parents=True, exist_ok=True)
    data = {"artifacts": {}, "parameterValues": params or {}}
    if metrics is not None:
        data["artifacts"]["metrics"] = {"artifacts": [{"uri": "x", "metadata": metrics}]}
    (run_dir / task / "executor_output.json").write_text(json.dumps(data))


def kfp_lines(task, status="SUCCESS", body=()):
    """What kfp.local 2.17 writes for one task: its logger's lines (coloured), then the task's indented print."""
    name = f"{CYAN}'{task}'{RESET}"
    colour = GREEN if status == "SUCCESS" else RED
    return [
        f"12:00:00.000 - INFO - Executing task {name}",
        "12:00:00.001 - INFO - Streamed logs:",
        "",
        *[f"    {line}" for line in body],
        f"12:00:05.000 - INFO - Task {name} finished with status {colour}{status}{RESET}",
        f"12:00:05.001 - INFO - Task {name} outputs:",
        "    metrics: Metrics( name='metrics',",
    ]


def test_stage_lines_with_seconds_and_figures_and_progress_without_the_mark(tmp_path):
    write_output(
        tmp_path, "prepare-data", {"corpus_documents": 400, "queries": 60, "train_labels": 90, "test_labels": 30}
    )
    write_output(tmp_path, "evaluate-2", params={"base_ndcg_at_10": 0.61234, "tuned_ndcg_at_10": 0.65})
    out, clock = io.StringIO(), FakeClock()
    console = RunConsole(out, lambda: tmp_path, clock=clock)
    body = [
        "[KFP Executor 12:00:00,100 INFO]: Got executor_input:",
        '{ "inputs": {} }',
        "[KFP Executor 12:00:01,000 INFO]: [progress] base: documents: 100/400 texts (25%), 50.0 texts/s, ETA 6 s",
    ]
    lines = kfp_lines("prepare-data", body=body)
    for line in lines[:-3]:
        console.feed(line)
    clock.now = 12.4
    for line in lines[-3:] + kfp_lines("evaluate-2"):
        console.feed(line)
    shown = out.getvalue().splitlines()
    assert [line[9:] for line in shown] == [
        "prepare-data ...",
        "  prepare-data: base: documents: 100/400 texts (25%), 50.0 texts/s, ETA 6 s",
        "prepare-data done, 12 s: 400 documents, 60 queries, 90 train / 30 test labels",
        "evaluate-2 ...",
        "evaluate-2 done, 0 s: NDCG@10 base 0.6123 -> tuned 0.6500",
    ]
    assert [stage[0] for stage in console.stages] == ["prepare-data", "evaluate-2"]


def test_a_failing_task_shows_its_last_lines(tmp_path):
    out = io.StringIO()
    console = RunConsole(out, lambda: tmp_path)
    console.log_path = tmp_path / LOG_NAME
    body = [f"line {i}" for i in range(100)] + ["ValueError: the cause"]
    for line in kfp_lines("fine-tune", "FAILURE", body):
        console.feed(line)
    shown = out.getvalue()
    assert "fine-tune FAILED after 0 s; its last lines:" in shown
    assert "  | ValueError: the cause" in shown and "  | line 99" in shown
    assert "line 69\n" not in shown and shown.count("  | ") == TAIL_LINES  # the last 30 only
    assert console.failed == "fine-tune"


def test_verbose_shows_every_line_once_a_failing_tasks_included(tmp_path):
    out = io.StringIO()
    console = RunConsole(out, lambda: tmp_path, verbose=True)
    lines = kfp_lines("select-corpus", body=["[progress] x: 1 rows"]) + kfp_lines("fine-tune", "FAILURE", ["boom"])
    for line in lines:
        console.feed(line)
    assert out.getvalue().splitlines() == lines


@pytest.mark.parametrize(
    ("task", "output", "figure"),
    [
        ("fine-tune", {"metrics": {"train_steps": 30, "train_loss": 0.25}}, "30 steps, final loss 0.2500"),
        ("evaluate", {"params": {"base_ndcg_at_10": 0.5, "tuned_ndcg_at_10": -1.0}}, "NDCG@10 0.5000"),
        (
            "embed-corpus",
            {"metrics": {"chunks_embedded": 10, "vectors_reused": 4, "documents_per_second": 12.5}},
            "14 vectors (10 embedded, 4 reused), 12.5 documents/s",
        ),
        (
            "upload-vectors-2",
            {"metrics": {"rows": 14, "inserted": 3, "updated": 1, "deleted": 2}},
            "14 rows: inserted 3, updated 1, deleted 2",
        ),
        ("select-corpus", {}, ""),
    ],
)
def test_stage_figures(task, output, figure):
    data = {"parameterValues": output.get("params", {}), "artifacts": {}}
    if "metrics" in output:
        data["artifacts"]["metrics"] = {"artifacts": [{"metadata": output["metrics"]}]}
    assert stage_figure(task, data) == figure


def test_watched_run_captures_print_logging_and_warnings_and_moves_the_log_into_the_run_folder(tmp_path):
    out = io.StringIO()
    root = tmp_path / "runs"
    stdout, stderr = sys.stdout, sys.stderr
    with watched_run(root, console=out) as watcher:
        assert sys.stdout is not stdout and sys.stderr is not stderr
        # as kfp.local logs: a handler on sys.stdout made while it runs
        handler = logging.StreamHandler(sys.stdout)
        logging.getLogger("kfp_like").addHandler(handler)
        logging.getLogger("kfp_like").warning("Executing task \033[96m'prepare-data'\033[0m")
        print("    [KFP Executor]: [progress] prepare: 1/2 rows (50%)")
        print("    a dump nobody needs on the console", file=sys.stderr)
        (root / "pipeline-2026").mkdir()
        write_output(root / "pipeline-2026", "prepare-data", {"corpus_documents": 3})
        print("Task 'prepare-data' finished with status SUCCESS")
        logging.getLogger("kfp_like").removeHandler(handler)
    log = root / "pipeline-2026" / LOG_NAME
    assert watcher.log_path == log and not list(root.glob(".embedpipe-run-*"))
    text = log.read_text()
    assert "a dump nobody needs" in text and "[progress] prepare" in text and "Executing task" in text
    shown = out.getvalue()
    assert "a dump nobody needs" not in shown
    assert "prepare-data: prepare: 1/2 rows (50%)" in shown and "prepare-data done, 0 s: 3 documents" in shown
    assert f"full log: {display_path(log)}" in shown
    assert sys.stdout is stdout and sys.stderr is stderr  # given back


def test_display_path_is_relative_under_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "runs" / "a.log") == "runs/a.log"
    assert display_path("/elsewhere/b") == "/elsewhere/b"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_progress_lines_replace_each_other(tmp_path):
    out = FakeTerminal()
    console = RunConsole(out, lambda: tmp_path)
    body = ["[progress] training: 1/3 steps (33%)", "[progress] training: 2/3 steps (66%)"]
    for line in kfp_lines("fine-tune", body=body):
        console.feed(line)
    text = out.getvalue()
    assert "training: 1/3 steps (33%)\r\x1b[K" in text  # the second overwrites the first
    assert "training: 2/3 steps (66%)\n" in text and "fine-tune done" in text.splitlines()[-1]


def test_a_retried_task_says_so(tmp_path):
    out = io.StringIO()
    console = RunConsole(out, lambda: tmp_path)
    for line in kfp_lines("fine-tune", "FAILURE", ["Terminated"]) + kfp_lines("fine-tune"):
        console.feed(line)
    shown = [line[9:] for line in out.getvalue().splitlines()]
    assert (
        shown[0] == "fine-tune ..." and "fine-tune ... again (retried)" in shown and shown[-1] == "fine-tune done, 0 s"
    )


def test_off_a_terminal_a_long_stage_shows_few_progress_lines_their_gaps_doubling(tmp_path):
    out, clock = io.StringIO(), FakeClock()
    console = RunConsole(out, lambda: tmp_path, clock=clock)
    started, *body, finished, outputs, dump = kfp_lines("fine-tune", body=["x"])
    for line in (started, "12:00:00.001 - INFO - Streamed logs:"):
        console.feed(line)
    for second in range(0, 1200, 10):  # a 20-minute stage, a progress line every 10 s
        clock.now = float(second)
        console.feed(f"    [progress] training: {second}/1200 steps")
    shown = [line[9:] for line in out.getvalue().splitlines() if "training:" in line]
    # at 0 s, then after gaps of 30, 60, 120, 240, 480 s: 6 lines of 120, the log file keeps them all
    assert [line.split(": ", 2)[2].split("/")[0] for line in shown] == ["0", "30", "90", "210", "450", "930"]
    console.feed("    [progress] training: 1200/1200 steps")
    console.feed(finished)
    console.feed(started)  # the next stage (a retry here) shows its first line at once again
    console.feed("    [progress] training: 1/2 steps")
    assert out.getvalue().splitlines()[-1].endswith("fine-tune: training: 1/2 steps")
