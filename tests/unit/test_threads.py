"""The thread budget: usable cores from affinity and the cgroup quota, shared by processes, overridable;
and the adaptive threads that leave other processes' cores alone."""

import os

import pytest
import torch

from embedpipe import threads
from embedpipe.threads import AdaptiveThreads, ThreadBudget, cgroup_cpu_limit, thread_budget


def test_cgroup_v2_and_v1_quotas(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1) is None


def test_budget_divides_the_usable_cores_among_processes(monkeypatch):
    monkeypatch.delenv(threads.THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert thread_budget().threads == 8
    assert thread_budget(processes=3).threads == 2
    assert thread_budget(processes=16).threads == 1
    assert thread_budget(threads=5, processes=4) == ThreadBudget(5, 8, 4, "explicit")


def test_usable_cores_respect_a_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.2)
    assert threads.usable_cores() == 2


def test_environment_override_and_its_errors(monkeypatch):
    monkeypatch.setenv(threads.THREADS_VARIABLE, "3")
    assert thread_budget().source == "environment" and thread_budget().threads == 3
    for bad in ("two", "0"):
        monkeypatch.setenv(threads.THREADS_VARIABLE, bad)
        with pytest.raises(ValueError, match="EMBEDPIPE_THREADS"):
            thread_budget()


class FakeShare:
    def __init__(self, readings):
        self.readings = list(readings)

    def others_busy(self):
        return self.readings.pop(0)


def test_adaptive_threads_use_the_cores_others_leave_free():
    saved = torch.get_num_threads()
    try:
        adaptive = AdaptiveThreads(ThreadBudget(4, 4, 1, "cores"), interval=0)
        adaptive._share = FakeShare([1.0, 3.6, 0.2, 0.0])
        assert adaptive.before_pass() == 3 and torch.get_num_threads() == 3
        assert adaptive.before_pass() == 1, "never fewer than one thread"
        assert adaptive.before_pass() == 4 and adaptive.before_pass() == 4, "never more than the budget"
        # An explicit choice is kept whatever the load.
        fixed = AdaptiveThreads(ThreadBudget(2, 4, 1, "explicit"), interval=0)
        fixed._share = FakeShare([3.9])
        assert fixed.before_pass() == 2
    finally:
        torch.set_num_threads(saved)


def test_cpu_share_counts_other_processes_not_this_one():
    share = threads.CpuShare()
    sum(i * i for i in range(3_000_000))  # this process's own work is not "others"
    others = share.others_busy()
    assert others is None or 0.0 <= others < os.cpu_count()


def test_one_process_per_core_gets_one_thread_each(monkeypatch):
    monkeypatch.delenv(threads.THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert thread_budget(processes=threads.ONE_PER_CORE) == ThreadBudget(1, 4, 4, "cores")


def test_use_budget_sets_the_ceiling_adapt_threads_keeps_to(monkeypatch):
    saved, saved_adaptive = torch.get_num_threads(), threads._adaptive
    try:
        threads.use_budget(ThreadBudget(1, 2, 2, "cores"))
        assert torch.get_num_threads() == 1
        threads._adaptive._share = FakeShare([0.0])  # nothing else busy: still at most the budget's 1
        threads._adaptive.interval = 0
        assert threads.adapt_threads() == 1 and torch.get_num_threads() == 1
    finally:
        threads._adaptive = saved_adaptive
        torch.set_num_threads(saved)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], 1),  # the local runner runs its worker in this process
        (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], 2),
        (["--direct_num_workers=2", "--direct_running_mode=multi_threading"], 1),
        (["--direct_num_workers=0", "--direct_running_mode=multi_processing"], threads.ONE_PER_CORE),
        (["--runner=DataflowRunner"], threads.ONE_PER_CORE),  # one SDK process per vCPU
        (["--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"], 1),
    ],
)
def test_worker_processes_follow_the_runner_options(args, expected):
    pytest.importorskip("apache_beam", reason="the embedding job's runner options need the [dataflow] extra")
    from apache_beam.options.pipeline_options import PipelineOptions

    from embedpipe.embed.runtime import processes_per_machine

    assert processes_per_machine(PipelineOptions(args)) == expected
