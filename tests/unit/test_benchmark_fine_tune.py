"""benchmarks/fine_tune.py's helpers on fake contenders, without training: the contender table, the
alternation order, medians and ratios to the plain recipe, the goal check and the JSON last line."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "fine_tune.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_fine_tune", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_contender_table(bench):
    assert list(bench.DEFAULT_CONTENDERS) == ["plain", "embedpipe", "embedpipe-auto"]
    assert set(bench.DEFAULT_CONTENDERS) <= set(bench.CONTENDERS)
    assert all(c.name == name for name, c in bench.CONTENDERS.items())
    # The plain recipe's budget, and the auto contender's hook holds valid FineTuneSettings fields today.
    assert bench.BATCH_SIZE * bench.STEPS == 1504
    from embedpipe.fine_tune import FineTuneSettings

    settings = FineTuneSettings(**{"train_steps": bench.STEPS, **bench.AUTO_SETTINGS})
    assert settings.train_steps >= bench.STEPS


def test_contenders_alternate_round_by_round(bench):
    assert bench.alternation(["a", "b", "c"], 3) == [
        (0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c"),
    ]  # fmt: skip
    calls = []
    scores = {"plain": [0.52, 0.50, 0.51], "embedpipe": [0.56, 0.55, 0.60], "embedpipe-auto": [0.58, 0.49, 0.57]}

    def fake(name, round_):
        calls.append((round_, name))
        return {
            "ndcg@10": scores[name][round_],
            "pairs_seen": 1504 if name != "embedpipe-auto" else 3008,
            "seconds": 1,
        }

    summary = bench.run_rounds(["plain", "embedpipe", "embedpipe-auto"], 3, fake, base=0.50)
    assert calls == bench.alternation(["plain", "embedpipe", "embedpipe-auto"], 3)
    assert summary["plain"]["median_gain"] == pytest.approx(0.01)
    assert summary["embedpipe"]["median_ndcg@10"] == pytest.approx(0.56)
    assert summary["embedpipe"]["median_gain"] == pytest.approx(0.06)
    assert summary["embedpipe"]["gain_ratio_to_plain"] == pytest.approx(6.0)
    assert summary["embedpipe-auto"]["worst_gain"] == pytest.approx(-0.01)
    assert summary["embedpipe-auto"]["pairs_seen"] == [3008]
    assert summary["plain"]["gain_ratio_to_plain"] == pytest.approx(1.0)


def test_no_ratio_without_a_plain_gain(bench):
    assert bench.ratio(0.05, None) is None
    assert bench.ratio(0.05, 0.0) is None and bench.ratio(0.05, -0.01) is None
    assert bench.ratio(0.03, 0.02) == pytest.approx(1.5)


def _results(ratio_scifact, ratio_jaquad, worst=0.01):
    def one(ratio):
        return {"contenders": {"embedpipe": {"gain_ratio_to_plain": ratio, "worst_gain": worst}}}

    return {"scifact": one(ratio_scifact), "jaquad": one(ratio_jaquad)}


def test_the_goal_is_met_only_on_every_data_set_and_never_below_the_base(bench):
    assert bench.goal(_results(1.6, 1.5))["met"] is True
    assert bench.goal(_results(1.6, 1.49))["met"] is False
    assert bench.goal(_results(1.6, None))["met"] is False
    assert bench.goal(_results(2.0, 2.0, worst=-0.001))["met"] is False
    assert bench.goal({})["met"] is False
    assert "1.5x" in bench.goal(_results(1.6, 1.5))["goal"]


def test_the_summary_is_one_json_line(bench):
    line = bench.json_line({"benchmark": "fine_tune", "jaquad": {"名前": 1.0}, "goal": {"met": False}})
    assert "\n" not in line and json.loads(line)["jaquad"] == {"名前": 1.0}


def test_unknown_contenders_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.main(["--contenders", "plain,nonsense"])
