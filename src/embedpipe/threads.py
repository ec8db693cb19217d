"""How many CPU threads the model runtimes (torch, ONNX Runtime) use in this process: decided here, once.

torch sizes its thread pool to every core of the machine. That is wrong wherever the process does not
have them all: a CPU set or a container's CPU quota (Kubernetes, Vertex AI, Docker `--cpus`), several
SDK processes on one Dataflow worker, the two workers of Beam's local runner in multi-process mode. Pools
that add up to more threads than cores make every forward pass wait for its slowest thread.

The budget is: the cores this process may use (CPU affinity, bounded by a cgroup CPU quota), divided
among the processes that share them, at least 1; an explicit `threads` (or `$EMBEDPIPE_THREADS`) wins.
`apply_thread_budget` sets it and logs the choice.

Cores can also be taken by processes nobody told us about (another job, a second Beam worker, a
training run beside the job). With one of two cores busy, a 2-thread pool waits at every operator for
the thread that shares its core: slower than 1 thread, and the more so the smaller the forward passes
(measured: benchmarks/README.md, embed_corpus "shared CPU"). So `adapt_threads()`, called before each
forward pass, re-reads at most every few seconds how many cores other processes kept busy (the machine's
busy time in /proc/stat less this process's own CPU time) and uses the cores left, within the budget.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: Overrides the budget for every runtime of this process (an integer >= 1).
THREADS_VARIABLE = "EMBEDPIPE_THREADS"
#: `processes` value meaning "one process per usable core" (Dataflow's Python workers: one SDK process per vCPU).
ONE_PER_CORE = -1


@dataclass(frozen=True)
class ThreadBudget:
    """Threads for this process's model runtime, and why.

    Attributes:
        threads: Intra-op threads for torch / ONNX Runtime.
        usable_cores: Cores this process may run on (affinity and CPU quota).
        processes: Processes sharing those cores.
        source: "explicit", "environment" or "cores".
    """

    threads: int
    usable_cores: int
    processes: int
    source: str

    def describe(self) -> str:
        if self.source != "cores":
            return f"{self.threads} thread(s) ({self.source} setting; {self.usable_cores} usable core(s))"
        share = f", shared by {self.processes} processes" if self.processes > 1 else ""
        return f"{self.threads} thread(s): {self.usable_cores} usable core(s){share}"


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), or None if unlimited."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, bounded by the cgroup CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def thread_budget(*, threads: int = 0, processes: int = 1) -> ThreadBudget:
    """The threads one process's model runtime should use.

    Args:
        threads: An explicit number (> 0) wins; else `$EMBEDPIPE_THREADS`; else the usable cores / processes.
        processes: Processes sharing this machine's (or container's) cores, e.g. the workers of Beam's local
            runner in multi-process mode or the SDK processes of a Dataflow worker; ONE_PER_CORE: as many as
            the usable cores.
    """
    cores = usable_cores()
    processes = cores if processes == ONE_PER_CORE else max(1, int(processes or 1))
    if threads and threads > 0:
        return ThreadBudget(int(threads), cores, processes, "explicit")
    from_env = os.environ.get(THREADS_VARIABLE, "").strip()
    if from_env:
        try:
            value = int(from_env)
        except ValueError:
            raise ValueError(f"${THREADS_VARIABLE}={from_env!r} is not a whole number of threads") from None
        if value < 1:
            raise ValueError(f"${THREADS_VARIABLE}={from_env!r}: give at least 1 thread")
        return ThreadBudget(value, cores, processes, "environment")
    return ThreadBudget(max(1, cores // processes), cores, processes, "cores")


def apply_thread_budget(budget: ThreadBudget, *, what: str = "torch") -> ThreadBudget:
    """Sets torch's intra-op threads to the budget and logs the choice once per process and value."""
    import torch

    if torch.get_num_threads() != budget.threads:
        torch.set_num_threads(budget.threads)
    if _last_logged.get(what) != budget:
        _last_logged[what] = budget
        logger.info("%s: %s", what, budget.describe())
    return budget


_last_logged: dict[str, ThreadBudget] = {}


class CpuShare:
    """How many cores other processes kept busy since the last reading (Linux /proc/stat; None elsewhere)."""

    def __init__(self):
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        import time

        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
        values = [int(v) for v in fields[:8]]
        busy = (sum(values) - values[3] - values[4]) / ticks
        own = sum(os.times()[:2])
        return time.monotonic(), busy, own

    def others_busy(self) -> float | None:
        """Cores' worth of CPU time that other processes used since the last call."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0]))


class AdaptiveThreads:
    """Keeps torch's intra-op threads at the cores other processes leave free, within a budget."""

    def __init__(self, budget: ThreadBudget, *, interval: float = 2.0):
        import time

        self.budget = budget
        self.interval = interval
        self._share = CpuShare()
        self._checked = time.monotonic()
        self.threads = budget.threads

    def before_pass(self) -> int:
        """Re-decides the threads when `interval` seconds have passed; returns the threads in use."""
        import time

        if self.budget.source != "cores" or time.monotonic() - self._checked < self.interval:
            return self.threads
        self._checked = time.monotonic()
        others = self._share.others_busy()
        if others is None:
            return self.threads
        free = self.budget.usable_cores - others
        threads = min(self.budget.threads, max(1, int(free + 0.5)))
        import torch

        current = torch.get_num_threads()  # torch's own count: other code may set it too
        if threads != current:
            torch.set_num_threads(threads)
            logger.info(
                "threads: %d -> %d (other processes keep %.1f of %d core(s) busy)",
                current,
                threads,
                others,
                self.budget.usable_cores,
            )
        self.threads = threads
        return self.threads


_adaptive: AdaptiveThreads | None = None


def use_budget(budget: ThreadBudget) -> ThreadBudget:
    """Makes `budget` this process's: applied and logged now, and the ceiling `adapt_threads` keeps to."""
    global _adaptive
    _adaptive = AdaptiveThreads(apply_thread_budget(budget))
    return budget


def adapt_threads() -> int:
    """Called before a forward pass: this process's `AdaptiveThreads`, made on first use from `thread_budget()`."""
    global _adaptive
    if _adaptive is None:
        _adaptive = AdaptiveThreads(apply_thread_budget(thread_budget()))
    return _adaptive.before_pass()
