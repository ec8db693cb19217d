"""What `embedpipe run` shows while kfp.local runs: one line per stage, the running task's progress, a failure's cause.

How kfp.local (2.17) writes: its own lines (`Executing task 'x'`, `Task 'x' finished with status ...`, the
outputs of each task) through the root logger, with a handler it builds on `sys.stdout` each time it logs
(`logging_utils.local_logger_context`); the task's own output through `print` (`SubprocessRunner` pipes the
subprocess's stdout and stderr together and prints each line; `DockerRunner` prints the container's log
stream). The executor inside the task logs its whole executor input and output as JSON. So everything
passes through the parent's `sys.stdout` (and library warnings through `sys.stderr`): `captured_output`
replaces both with a stream that writes every line to the log file and hands it to `RunConsole`, which
decides what the console gets. Nothing is written to the file descriptors directly, so no fd redirection.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from embedpipe.local import newest_run_dir
from embedpipe.progress import PROGRESS_MARK, format_rate, format_seconds, progress_text

#: Not on a terminal: seconds between a stage's first two progress lines on the console, doubling after each.
FIRST_PROGRESS_GAP = 30.0

#: How many of a failing task's last lines the console shows.
TAIL_LINES = 30

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


def stage_figure(task: str, executor_output: dict) -> str:
    """The figure a person wants from a finished task, read from its executor_output.json.

    Args:
        task: The task name (`evaluate-2` is an evaluate).
        executor_output: The parsed executor_output.json.

    Returns:
        e.g. "14 documents, 180 queries, 3 train / 5 test labels"; "" for a task without one.
    """
    params = executor_output.get("parameterValues", {})
    metrics = {}
    artifact = executor_output.get("artifacts", {}).get("metrics", {}).get("artifacts", [{}])[0]
    metrics = artifact.get("metadata", {}) or metrics
    kind = re.sub(r"-\d+$", "", task)

    def count(name: str) -> str:
        return f"{int(metrics.get(name) or 0):,}"

    if kind == "prepare-data" and metrics:
        return (
            f"{count('corpus_documents')} documents, {count('queries')} queries, "
            f"{count('train_labels')} train / {count('test_labels')} test labels"
        )
    if kind == "fine-tune" and metrics:
        loss = metrics.get("train_loss")
        return f"{count('train_steps')} steps" + (f", final loss {loss:.4f}" if isinstance(loss, float | int) else "")
    if kind == "evaluate" and "base_ndcg_at_10" in params:
        base, tuned = params["base_ndcg_at_10"], params.get("tuned_ndcg_at_10", -1)
        return f"NDCG@10 base {base:.4f} -> tuned {tuned:.4f}" if tuned >= 0 else f"NDCG@10 {base:.4f}"
    if kind == "embed-corpus" and metrics:
        vectors = int(metrics.get("chunks_embedded") or 0) + int(metrics.get("vectors_reused") or 0)
        rate = metrics.get("documents_per_second")
        text = f"{vectors:,} vectors ({count('chunks_embedded')} embedded, {count('vectors_reused')} reused)"
        return text + (f", {format_rate(rate)} documents/s" if rate else "")
    if kind == "upload-vectors" and metrics:
        return f"{count('rows')} rows: inserted {count('inserted')}, updated {count('updated')}, deleted {count('deleted')}"
    return ""


class RunConsole:
    """Turns kfp.local's output, line by line, into what the console shows.

    Args:
        console: Where the shown lines go (the real stdout).
        find_run_dir: Returns the run's folder once kfp.local made it (None before).
        verbose: Show every line as it comes (the stage lines are not added then: kfp's own say the same).
        on_run_dir: Called once with the run folder when it is first found (to move the log file there).
        clock: Seconds, for the stage times.
    """

    def __init__(
        self,
        console: TextIO,
        find_run_dir: Callable[[], Path | None],
        *,
        verbose: bool = False,
        on_run_dir: Callable[[Path], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console, self.find_run_dir, self.verbose = console, find_run_dir, verbose
        self.on_run_dir, self.clock = on_run_dir, clock
        self.run_dir: Path | None = None
        self.task: str | None = None
        self.task_started = 0.0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stages: list[tuple[str, float, str]] = []  # (task, seconds, figure or "FAILED")
        self.failed: str | None = None
        self.log_path: Path | None = None
        self._tty = _isatty(console)
        self._progress_open = False
        self._next_progress = 0.0  # when the next progress line may show (not on a terminal)
        self._progress_gap = FIRST_PROGRESS_GAP

    def feed(self, line: str) -> None:
        """Takes one line of output (without its newline)."""
        if self.verbose:
            self._show(line)
        plain = _ANSI.sub("", line)
        started, finished = _STARTED.search(plain), _FINISHED.search(plain)
        if started:
            self._locate_run_dir()
            again = started.group(1) in {task for task, _, figure in self.stages if figure == "FAILED"}
            self.task, self.task_started = started.group(1), self.clock()
            self._next_progress, self._progress_gap = self.task_started, FIRST_PROGRESS_GAP
            self.tail.clear()
            if not self.verbose:  # a task with a retry policy runs again after failing (kfp.local logs it nowhere)
                self._show(f"{_now()} {self.task} ..." + (" again (retried)" if again else ""))
            return
        if finished:
            self._finish(finished.group(1), finished.group(2))
            return
        self.tail.append(plain.strip())
        progress = progress_text(plain)
        if progress and not self.verbose and self._progress_due():
            self._show(f"{_now()}   {self.task or ''}: {progress[len(PROGRESS_MARK) :].strip()}", progress=True)

    def _progress_due(self) -> bool:
        # On a terminal every line shows (each replaces the one before). Elsewhere the lines stay, so within a
        # stage the gap between two doubles (30 s, 60 s, 120 s, ...): a stage of any length shows a few lines,
        # and the whole run stays short enough to read; the log file keeps them all.
        if self._tty:
            return True
        now = self.clock()
        if now < self._next_progress:
            return False
        self._next_progress, self._progress_gap = now + self._progress_gap, self._progress_gap * 2
        return True

    def _finish(self, task: str, status: str) -> None:
        seconds = self.clock() - self.task_started if task == self.task else 0.0
        self._locate_run_dir()
        if status != "SUCCESS":
            self.failed = task
            self.stages.append((task, seconds, "FAILED"))
            if self.verbose:  # its lines are on the console already
                return
            if task.startswith("quality-gate-failed"):  # `embedpipe run` says what the gate decided
                self._show(f"{_now()} {task} after {format_seconds(seconds)}")
                return
            self._show(f"{_now()} {task} FAILED after {format_seconds(seconds)}; its last lines:")
            for tail_line in self.tail:
                if tail_line:
                    self._show("  | " + tail_line)
            if self.log_path:
                self._show(f"  full log: {display_path(self.log_path)}")
            return
        figure = ""
        if self.run_dir is not None:
            output = self.run_dir / task / "executor_output.json"
            try:
                figure = stage_figure(task, json.loads(output.read_text()))
            except (OSError, ValueError, TypeError, KeyError):
                figure = ""
        self.stages.append((task, seconds, figure))
        if not self.verbose:
            self._show(f"{_now()} {task} done, {format_seconds(seconds)}" + (f": {figure}" if figure else ""))

    def _locate_run_dir(self) -> None:
        if self.run_dir is None:
            self.run_dir = self.find_run_dir()
            if self.run_dir is not None and self.on_run_dir is not None:
                self.on_run_dir(self.run_dir)
                if self.log_path and not self.verbose:
                    self._show(f"{_now()} full log: {display_path(self.log_path)}")

    def say(self, line: str) -> None:
        """Shows a line of the caller's own on the console (and not in the log)."""
        self._show(line)

    def _show(self, line: str, *, progress: bool = False) -> None:
        # On a terminal a progress line replaces the one before it; elsewhere (a file, a pipe) each one stays.
        if self._progress_open:
            self.console.write("\r\x1b[K" if progress else "\n")
        self._progress_open = progress and self._tty
        self.console.write(line + ("" if self._progress_open else "\n"))
        self.console.flush()


class _LineStream(io.TextIOBase):
    """A text stream that writes everything to a log file and hands each complete line to a callback."""

    def __init__(self, log: TextIO, on_line: Callable[[str], None]):
        super().__init__()
        self.log, self.on_line, self.pending = log, on_line, ""
        self.lock = threading.Lock()  # a library may log from a thread of its own

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.log.write(text)
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self.on_line(line)
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def isatty(self) -> bool:  # progress throttling and colours: nobody reads this live
        return False

    def close_pending(self) -> None:
        if self.pending:
            self.on_line(self.pending)
            self.pending = ""


@contextlib.contextmanager
def captured_output(console: RunConsole, log_path: Path):
    """Replaces sys.stdout and sys.stderr with streams that log everything and feed `console` line by line.

    Args:
        console: Decides what the real console shows; its `log_path` is kept up to date.
        log_path: Where the log starts; `console.on_run_dir` may move it (the open file follows).

    Yields:
        The open log file.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        console.log_path = log_path
        stream = _LineStream(log, console.feed)
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = stream
        try:
            yield log
        finally:
            stream.close_pending()
            sys.stdout, sys.stderr = stdout, stderr


def display_path(path: Path | str) -> str:
    """`path` relative to the current folder when it is under it (shorter, and no machine's absolute paths)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _now() -> str:
    return time.strftime("%H:%M:%S")


#: The log file's name in the run folder.
LOG_NAME = "embedpipe-run.log"


@contextlib.contextmanager
def watched_run(pipeline_root: str | os.PathLike, *, verbose: bool = False, console: TextIO | None = None):
    """Captures a kfp.local run's output while the body runs: a log file in the run folder, the stages shown.

    The log starts in the pipeline root (kfp.local makes the run folder only when its first task writes)
    and moves into the run folder, as `embedpipe-run.log`, as soon as that folder exists.

    Args:
        pipeline_root: The `pipeline_root` given to `run_locally`.
        verbose: Show every line on the console too.
        console: Where shown lines go (default: sys.stdout as it is now).

    Yields:
        The RunConsole: `log_path`, `stages`, `failed`.
    """
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in root.iterdir()}
    log_path = root / f".embedpipe-run-{os.getpid()}.log"

    def find_run_dir() -> Path | None:
        return newest_run_dir(root, before)

    def move_log(run_dir: Path) -> None:
        target = run_dir / LOG_NAME
        os.replace(watcher.log_path, target)  # the open file keeps writing to the moved one
        watcher.log_path = target

    watcher = RunConsole(console or sys.stdout, find_run_dir, verbose=verbose, on_run_dir=move_log)
    with captured_output(watcher, log_path):
        try:
            yield watcher
        finally:
            if watcher.run_dir is None:
                watcher._locate_run_dir()
            if watcher._progress_open:  # the summary starts on a line of its own
                watcher.console.write("\n")
                watcher._progress_open = False
