"""One progress reporter for every long loop: "what: done/total unit (pct), rate unit/s, ETA" log lines.

Lines go through `logging` (logger `embedpipe.progress` unless told otherwise), throttled by time: the
first update a second or more after the start (so that it has a rate), then at most one line every
`interval` seconds (10 s when stderr is not a terminal, 2 s when it is), then the last (none at all for
a loop done within a second). Each message starts with `PROGRESS_MARK`, so a parent process (`embedpipe run`
reading a kfp.local task's output) can pick these lines out of everything else a task prints
(`progress_text` finds them). Only the standard library is used: any layer may report progress.

Example:
    >>> clock = iter([0.0, 2.0, 5.0, 20.0]).__next__
    >>> progress = Progress("encode", total=100, unit="texts", clock=clock, interval=10, emit=print)
    >>> progress.update(10)
    [progress] encode: 10/100 texts (10%), 5.0 texts/s, ETA 18 s
    >>> progress.update(10)  # 3 s later: throttled
    >>> progress.finish(80)
    [progress] encode: 100/100 texts (100%), 5.0 texts/s, 20 s
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

#: What every progress message starts with; `embedpipe run` shows the lines that carry it.
PROGRESS_MARK = "[progress]"
#: Seconds between two lines when nobody watches a terminal (a log file, a parent process).
QUIET_INTERVAL = 10.0
#: Seconds between two lines on a terminal.
TTY_INTERVAL = 2.0
#: The first line waits this long after the start, so that it can say a rate; a loop done sooner says
#: nothing (its stage's own line says what it did).
FIRST_LINE_AFTER = 1.0


def default_interval() -> float:
    """2 s on a terminal, 10 s otherwise (a log file or a parent process reads the lines)."""
    try:
        return TTY_INTERVAL if sys.stderr.isatty() else QUIET_INTERVAL
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return QUIET_INTERVAL


#: Set (to anything but "" or "0") by `embedpipe run --verbose`: libraries keep their INFO lines.
VERBOSE_ENV = "EMBEDPIPE_VERBOSE"


def verbose() -> bool:
    """Whether the user asked for everything (`$EMBEDPIPE_VERBOSE`, which `embedpipe run --verbose` sets)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_libraries(*names: str) -> None:
    """Raises these libraries' loggers to WARNING (their per-step INFO chatter), unless `verbose()`.

    transformers' `set_verbosity_warning` does the same to its root logger, `transformers`.
    """
    if verbose():
        return
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def format_seconds(seconds: float) -> str:
    """'42 s', '3 min 5 s', '2 h 4 min': short enough for one line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def format_rate(rate: float) -> str:
    """A rate with the digits it needs: 0.25, 3.4, 120."""
    if rate >= 100:
        return f"{rate:,.0f}"
    if rate >= 1:
        return f"{rate:.1f}"
    return f"{rate:.2g}"


class Progress:
    """Counts work done and logs a throttled progress line.

    Args:
        what: What is done, e.g. "base: documents" (the line starts with it).
        total: How much there is to do; None when unknown (no percentage, no ETA).
        unit: What is counted, e.g. "texts", "steps", "rows".
        logger: Where the lines go (default `embedpipe.progress`); ignored when `emit` is given.
        interval: Least seconds between two lines (default `default_interval()`).
        clock: Monotonic seconds (a fake one in tests).
        emit: Takes each line instead of the logger (tests, doctests).
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        *,
        logger: logging.Logger | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ):
        self.what, self.total, self.unit = what, total, unit
        self.interval = default_interval() if interval is None else interval
        self.clock = clock
        self.done = 0
        self.figures: dict[str, str] = {}
        self.lines = 0
        self._logger = logger or logging.getLogger("embedpipe.progress")
        self._emit = emit or self._logger.info
        self.started = clock()
        self._last_line: float | None = None
        self._finished = False

    def update(self, n: int = 1, **figures) -> None:
        """Adds `n` to what is done; logs a line when it is the first or `interval` has passed.

        Args:
            n: Work done since the last call.
            **figures: Extra figures shown at the end of the line (e.g. loss=0.123), kept until replaced.
        """
        self.set(self.done + n, **figures)

    def set(self, done: int, **figures) -> None:
        """Sets what is done (for loops that know their position, e.g. a training step); reaching `total`
        logs the last line (`finish`)."""
        self.done = done
        self.figures.update({name: _figure(value) for name, value in figures.items()})
        if self.total and done >= self.total:  # the last line at once, not a first one and then the same again
            self.finish()
            return
        now = self.clock()
        if self._last_line is None:
            if now - self.started >= FIRST_LINE_AFTER:  # the first line, once it can say a rate
                self._log(now)
        elif now - self._last_line >= self.interval:
            self._log(now)

    def finish(self, n: int = 0, **figures) -> None:
        """Adds the last `n` and logs the last line (elapsed time instead of ETA); once only, and not for a loop
        that took less than `FIRST_LINE_AFTER` and logged nothing before."""
        if self._finished:
            return
        self.done += n
        self.figures.update({name: _figure(value) for name, value in figures.items()})
        self._finished = True
        now = self.clock()
        if self.lines or now - self.started >= FIRST_LINE_AFTER:  # a loop done within a second says nothing
            self._log(now)

    def text(self, now: float | None = None) -> str:
        """The progress line as it would be logged now."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 0.0)
        parts = [f"{self.done:,}/{self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"]
        if self.total:
            parts[0] += f" ({min(100, 100 * self.done // self.total)}%)"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{format_rate(rate)} {self.unit}/s")
            if self._finished:
                parts.append(format_seconds(elapsed))
            elif self.total and self.total > self.done:
                parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        parts.extend(f"{name} {value}" for name, value in self.figures.items())
        return f"{PROGRESS_MARK} {self.what}: " + ", ".join(parts)

    def _log(self, now: float) -> None:
        self._last_line = now
        self.lines += 1
        self._emit(self.text(now))


def _figure(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_text(line: str) -> str | None:
    """The progress message in a line of someone's output (whatever prefix its log format adds), or None."""
    at = line.find(PROGRESS_MARK)
    return line[at:].rstrip() if at >= 0 else None
