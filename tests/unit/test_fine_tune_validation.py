"""Validation-driven fine-tuning: the automatic split by query, the validation curve's rules, the saved model
is the best validation step's, early stopping stops, the best step survives a resume, and no test label is
read. Scripted NDCG@10 curves for the selection logic; real evaluations (tiny data, few steps) for the rest."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import TrainerCallback

from embedpipe.fine_tune import (
    BASE_LEARNING_RATE,
    METADATA_FILE,
    VALIDATED_BASE_LEARNING_RATE,
    FineTuneError,
    FineTuneSettings,
    fine_tune,
    split,
    validation,
)
from embedpipe.fine_tune.early_stop import BEST_DIR, ValidationCurve
from embedpipe.fine_tune.split import split_validation, validation_query_count
from tests.conftest import prepare_short_scifact_mini

FAST = dict(max_seq_length=32, seed=7, batch_size=8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    return prepare_short_scifact_mini(tmp_path_factory.mktemp("prepared"))


@pytest.fixture
def held_out(prepared, tmp_path) -> str:
    """Validation labels: 12 of the train queries (every tenth), as a given validation file."""
    labels = pd.read_parquet(prepared["train_labels_path"])
    queries = sorted(labels["query-id"].astype(str).unique())[::10]
    path = tmp_path / "validation_labels.parquet"
    labels[labels["query-id"].astype(str).isin(queries)].to_parquet(path)
    return str(path)


def labels_of(queries: int, per_query: int = 2) -> pd.DataFrame:
    ids = [f"q{i}" for i in range(queries) for _ in range(per_query)]
    return pd.DataFrame({"query-id": ids, "corpus-id": [f"d{i}" for i in range(len(ids))], "score": 1})


# --- the automatic split ---------------------------------------------------------------------------------


def test_the_automatic_split_holds_out_whole_queries_seeded_between_a_floor_and_a_ceiling():
    labels = labels_of(809, per_query=3)
    first = split_validation(labels, share=0.1, seed=3)
    held = set(first.validation["query-id"])
    assert len(held) == 81 and len(first.validation) == 243  # every label of a held-out query goes with it
    assert held.isdisjoint(first.train["query-id"]) and len(first.train) + len(first.validation) == len(labels)
    assert held <= set(labels["query-id"])  # drawn from the train labels only
    assert set(split_validation(labels, share=0.1, seed=3).validation["query-id"]) == held  # seeded
    assert set(split_validation(labels, share=0.1, seed=4).validation["query-id"]) != held
    assert "81 of 809 train queries held out" in first.reason

    assert validation_query_count(200, 0.01) == split.VALIDATION_MIN_QUERIES == 20  # floor
    assert validation_query_count(100_000, 0.1) == split.VALIDATION_MAX_QUERIES == 300  # ceiling
    none = split_validation(labels_of(199), share=0.1, seed=3)
    assert none.validation is None and len(none.train) == 398 and "fewer than the 200" in none.reason
    assert split_validation(labels, share=0, seed=3).validation is None


def test_queries_without_a_positive_label_are_not_counted_or_drawn():
    labels = pd.concat(
        [labels_of(250), labels_of(400).assign(**{"query-id": lambda f: "z" + f["query-id"], "score": 0})]
    )
    held = split_validation(labels, share=0.1, seed=1).validation
    assert held["query-id"].nunique() == 25 and not held["query-id"].str.startswith("z").any()


def test_bad_validation_settings_fail_clearly():
    with pytest.raises(FineTuneError, match="validation_share must be >= 0 and < 1"):
        FineTuneSettings(validation_share=1.0)
    with pytest.raises(FineTuneError, match="early_stopping_patience must be >= 0"):
        FineTuneSettings(early_stopping_patience=-1)
    with pytest.raises(FineTuneError, match="base_learning_rate must be > 0 and < 1"):
        FineTuneSettings(base_learning_rate=-1e-5)
    assert FineTuneSettings(train_steps=50).evaluation_steps == 10  # a fifth of the run
    assert FineTuneSettings(train_steps=47).evaluation_steps == 10
    assert FineTuneSettings(train_steps=50, validation_steps=7).evaluation_steps == 7


def test_the_base_learning_rate_follows_the_validation_labels_unless_given():
    settings = FineTuneSettings(learning_rate_multiplier=2)
    assert settings.for_validation(True).learning_rate == pytest.approx(2 * VALIDATED_BASE_LEARNING_RATE)
    assert settings.for_validation(False).learning_rate == pytest.approx(2 * BASE_LEARNING_RATE)
    assert VALIDATED_BASE_LEARNING_RATE > BASE_LEARNING_RATE
    given = FineTuneSettings(learning_rate_multiplier=2, base_learning_rate=1e-5)
    assert given.for_validation(True).learning_rate == given.for_validation(False).learning_rate == pytest.approx(2e-5)
    assert FineTuneSettings(base_learning_rate=0).base_learning_rate is None  # 0 = chosen by the data


# --- the curve's rules -----------------------------------------------------------------------------------


def test_the_best_step_is_the_highest_trained_one_earlier_on_a_tie_never_the_base():
    curve = ValidationCurve(patience=0)
    for step, score in ((0, 0.9), (2, 0.5), (4, 0.7), (6, 0.7), (8, 0.6)):
        curve.record(step, score)
    assert (curve.best_step, curve.best_score, curve.base_score) == (4, 0.7, 0.9)
    assert curve.since_improvement == 4 and not curve.should_stop  # patience 0: never early
    assert ValidationCurve.from_dict(json.loads(json.dumps(curve.to_dict()))) == curve


def test_patience_counts_evaluations_without_improvement_over_all_earlier_ones():
    curve = ValidationCurve(patience=2)
    for step, score in ((0, 0.5), (1, 0.6), (2, 0.55), (3, 0.61)):
        curve.record(step, score)
        assert not curve.should_stop
    curve.record(4, 0.61)  # a tie does not improve
    curve.record(5, 0.3)
    assert curve.should_stop and curve.best_step == 3


# --- scripted curves through a real training run -----------------------------------------------------------


class Clock(TrainerCallback):
    """Knows the step (for the scripted evaluator) and keeps the weights of the steps asked for."""

    def __init__(self, keep=(), stop_at: int | None = None):
        self.step, self.keep, self.stop_at, self.weights = 0, set(keep), stop_at, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.step = state.global_step
        if self.step in self.keep:
            self.weights[self.step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.step == self.stop_at:
            raise KeyboardInterrupt("preempted")  # after checkpoint stop_at - 1 is complete (save_steps=2)


def scripted(monkeypatch, clock: Clock, scores: dict[int, float]) -> list[int]:
    """Replaces the validation NDCG@10 by `scores[step]`; returns the steps it was asked for."""
    asked = []

    def fake(model, validation_set, **kwargs):
        asked.append(clock.step)
        return scores[clock.step]

    monkeypatch.setattr(validation, "validation_ndcg", fake)
    return asked


def saved_weights(folder: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k].cpu().numpy(), b[k].cpu().numpy()) for k in a)


def test_the_saved_model_is_the_step_with_the_best_validation_ndcg(prepared, held_out, tmp_path, monkeypatch):
    clock = Clock(keep=(3, 6))
    scores = {0: 0.40, 1: 0.42, 2: 0.45, 3: 0.50, 4: 0.47, 5: 0.50, 6: 0.44}
    asked = scripted(monkeypatch, clock, scores)
    out = tmp_path / "best"
    result = fine_tune(
        **prepared,
        output_dir=str(out),
        validation_labels_path=held_out,
        train_steps=6,
        validation_steps=1,
        early_stopping_patience=0,
        learning_rate_multiplier=20,
        callbacks=[clock],
        **FAST,
    )
    assert asked == [0, 1, 2, 3, 4, 5, 6]
    assert not same(clock.weights[3], clock.weights[6])  # the steps differ, so the comparison means something
    assert same(saved_weights(out), clock.weights[3])  # step 5 ties step 3: the earlier one
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["chosen_step"] == 3 and metadata["last_step"] == 6 and metadata["stopped_early"] is False
    assert metadata["validation_ndcg_curve"] == [[s, v] for s, v in scores.items()]
    assert metadata["validation_ndcg_base"] == 0.40 and metadata["validation_source"] == "given"
    assert result.metrics["validation_ndcg@10"] == 0.50 and result.metrics["chosen_step"] == 3
    assert result.metrics["validation_ndcg@10_base"] == 0.40 and result.metrics["stopped_early"] == 0


def test_training_stops_early_when_the_validation_curve_plateaus(prepared, held_out, tmp_path, monkeypatch):
    clock = Clock()
    scripted(monkeypatch, clock, {0: 0.4, 2: 0.5} | {step: 0.49 for step in range(3, 41)})
    result = fine_tune(
        **prepared,
        output_dir=str(tmp_path / "early"),
        validation_labels_path=held_out,
        train_steps=40,
        validation_steps=2,
        early_stopping_patience=2,
        callbacks=[clock],
        **FAST,
    )
    assert result.metrics["train_steps"] == 6 < 40  # evaluations at 4 and 6 did not beat step 2
    assert result.metadata["stopped_early"] is True and result.metadata["chosen_step"] == 2
    assert [step for step, _ in result.metadata["validation_ndcg_curve"]] == [0, 2, 4, 6]


def test_a_resumed_run_keeps_the_best_step_and_curve_of_the_run_it_resumes(prepared, held_out, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    scores = {0: 0.4, 1: 0.45, 2: 0.6, 3: 0.5, 4: 0.55, 5: 0.52, 6: 0.58}
    options = dict(validation_labels_path=held_out, train_steps=6, save_steps=2, validation_steps=1, **FAST)
    first = Clock(keep=(2,), stop_at=5)
    scripted(monkeypatch, first, scores)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(**prepared, output_dir=str(out), callbacks=[first], early_stopping_patience=0, **options)
    assert (out / "checkpoints" / BEST_DIR / "step-2.pt").is_file()

    second = Clock()
    asked = scripted(monkeypatch, second, scores)
    result = fine_tune(**prepared, output_dir=str(out), callbacks=[second], early_stopping_patience=0, **options)
    assert asked == [5, 6]  # steps 0-4 came from the checkpoint, not evaluated again
    assert result.metrics["resumed_from_step"] == 4 and result.metadata["chosen_step"] == 2
    assert result.metadata["validation_ndcg_curve"] == [[s, v] for s, v in scores.items()]
    assert same(saved_weights(out), first.weights[2])


# --- real evaluations ------------------------------------------------------------------------------------


def test_no_test_label_is_read_and_the_automatic_split_draws_from_train_only(prepared, tmp_path, monkeypatch, caplog):
    # scifact-mini has 120 train queries: lower the bounds so that it is split (12 queries held out).
    monkeypatch.setattr(split, "VALIDATION_MIN_TRAIN_QUERIES", 50)
    monkeypatch.setattr(split, "VALIDATION_MIN_QUERIES", 5)
    folder = Path(prepared["train_labels_path"]).parent
    test_labels = folder / "test_labels.parquet"
    assert test_labels.is_file()
    options = dict(train_steps=4, validation_steps=2, learning_rate_multiplier=5, **FAST)

    caplog.set_level("INFO", logger="embedpipe")
    first = fine_tune(**prepared, output_dir=str(tmp_path / "a"), **options)
    original = test_labels.read_bytes()
    try:
        # Poisoned: each test label points at another document, then the file is made unreadable too.
        poisoned = pd.read_parquet(test_labels)
        poisoned["corpus-id"] = poisoned["corpus-id"].sample(frac=1, random_state=0).to_numpy()
        poisoned.to_parquet(test_labels)
        os.chmod(test_labels, 0)
        second = fine_tune(**prepared, output_dir=str(tmp_path / "b"), **options)
    finally:
        os.chmod(test_labels, 0o644)
        test_labels.write_bytes(original)

    assert same(saved_weights(tmp_path / "a"), saved_weights(tmp_path / "b"))
    assert first.metadata["validation_ndcg_curve"] == second.metadata["validation_ndcg_curve"]
    curve = first.metadata["validation_ndcg_curve"]
    assert [step for step, _ in curve] == [0, 2, 4] and all(0 < score <= 1 for _, score in curve)
    assert first.metadata["validation_source"] == "split" and first.metadata["validation_queries"] == 12
    train = pd.read_parquet(prepared["train_labels_path"])
    train_queries = train.loc[train["score"] >= 1, "query-id"].nunique()
    assert f"12 of {train_queries} train queries held out" in first.metadata["validation_split"]
    assert first.metadata["validation_corpus"] == "the whole corpus (400 documents)"
    assert first.metrics["train_pairs"] < (train["score"] >= 1).sum()  # the held-out queries' pairs are not trained on
    assert "validation NDCG@10 at step 0" in caplog.text
    # With validation labels the base rate is the validated one, in the trainer (its log line) and the metadata.
    assert first.metadata["learning_rate"] == pytest.approx(5 * VALIDATED_BASE_LEARNING_RATE)
    assert "lr 0.0004," in caplog.text


# --- where the settings and figures show -------------------------------------------------------------------


def test_the_component_and_the_cli_default_to_the_settings_defaults():
    import dataclasses
    import inspect

    from embedpipe.cli import build_parser
    from embedpipe.components import fine_tune as component

    defaults = {f.name: f.default for f in dataclasses.fields(FineTuneSettings)}
    parameters = inspect.signature(component.python_func).parameters
    args = build_parser().parse_args(["fine-tune", "--data", "x"])
    for name in ("validation_share", "validation_steps", "early_stopping_patience", "base_learning_rate"):
        assert parameters[name].default == (defaults[name] or 0) == (getattr(args, name) or 0), name


def test_the_training_report_draws_the_validation_ndcg_curve_and_the_chosen_step():
    import re

    from embedpipe.reports import training_report

    metadata = {
        "base_model": "default",
        "loss_curve": [[1, 2.5], [2, 2.1], [3, 1.7], [4, 1.6]],
        "validation_ndcg_curve": [[0, 0.61], [2, 0.66], [4, 0.64]],
        "validation_ndcg_base": 0.61,
        "chosen_step": 2,
        "last_step": 4,
        "stopped_early": True,
        "early_stopping_patience": 1,
        "validation_source": "split",
        "validation_queries": 81,
        "validation_corpus": "the whole corpus (400 documents)",
        "metrics": {"train_steps": 4, "validation_ndcg@10": 0.66, "chosen_step": 2},
    }
    page = training_report(metadata)
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2 and ">NDCG@10<" in svgs[1] and "chosen (step 2)" in svgs[1] and "base model" in svgs[1]
    for fact in ("2 of 4", "0.6100 → 0.6600", "yes (patience 1 evaluations)", "81 (held out of the train queries)"):
        assert f"<td>{fact}</td>" in page, fact
    assert "3 evaluations" in page and "training stopped early" in page
    # Without a validation NDCG@10 curve: one figure, as before.
    assert len(re.findall(r"<svg", training_report({"base_model": "d", "loss_curve": [[1, 1.0]], "metrics": {}}))) == 1


# --- the learning-rate search --------------------------------------------------------------------------------


def test_the_learning_rate_search_runs_each_factor_briefly_and_keeps_the_best(tmp_path):
    from embedpipe.fine_tune import FineTuneResult
    from embedpipe.fine_tune.lr_search import search_learning_rate

    settings = FineTuneSettings(
        train_steps=100, validation_steps=5, learning_rate_multiplier=2, learning_rate_search=[1, 2, 4]
    )
    scores = {2.0: 0.50, 4.0: 0.61, 8.0: 0.61}  # a tie: the earlier factor
    trials = []

    def train(folder, trial):
        trials.append((trial.learning_rate_multiplier, trial.train_steps, trial.early_stopping_patience))
        return FineTuneResult(folder, {"validation_ndcg@10": scores[trial.learning_rate_multiplier], "chosen_step": 5})

    full, record = search_learning_rate(settings, tmp_path, train)
    assert trials == [(2.0, 15, 0), (4.0, 15, 0), (8.0, 15, 0)]  # 3 evaluations' worth of steps each
    assert full.learning_rate_multiplier == 4.0 and full.learning_rate_search == () and full.train_steps == 100
    assert record["chosen_multiplier"] == 4.0 and [t["validation_ndcg@10"] for t in record["trials"]] == [
        0.5,
        0.61,
        0.61,
    ]

    trials.clear()  # a resumed run reads the outcome instead of searching again
    again, _ = search_learning_rate(settings, tmp_path, train)
    assert trials == [] and again == full

    with pytest.raises(FineTuneError, match="needs validation NDCG@10"):
        search_learning_rate(settings, tmp_path / "none", lambda folder, trial: FineTuneResult(folder, {}))
    with pytest.raises(FineTuneError, match="factors must be > 0"):
        FineTuneSettings(learning_rate_search=(1, 0))
    with pytest.raises(FineTuneError, match="one process only"):
        FineTuneSettings(learning_rate_search=(1, 2), processes=2)


def test_a_run_with_a_learning_rate_search_records_what_it_tried(prepared, held_out, tmp_path, monkeypatch):
    clock = Clock()
    scripted(monkeypatch, clock, dict.fromkeys(range(5), 0.5))
    result = fine_tune(
        **prepared,
        output_dir=str(tmp_path / "search"),
        validation_labels_path=held_out,
        train_steps=2,
        validation_steps=1,
        learning_rate_search=(1, 3),
        **FAST,
    )
    search = result.metadata["learning_rate_search"]
    assert [t["multiplier"] for t in search["trials"]] == [1.0, 3.0] and search["steps_per_trial"] == 2
    assert result.metadata["learning_rate_multiplier"] == 1.0 and result.metrics["learning_rate_search_seconds"] > 0
    assert json.loads((tmp_path / "search" / METADATA_FILE).read_text())["learning_rate_search"] == search
    assert not (tmp_path / "search" / "checkpoints").exists()


# --- several processes -------------------------------------------------------------------------------------


def test_with_two_processes_rank_zero_evaluates_and_both_follow_its_curve(prepared, held_out, tmp_path, capfd):
    out = tmp_path / "ddp"
    settings = FineTuneSettings(
        train_steps=4, validation_steps=2, early_stopping_patience=0, processes=2, batch_size=4, max_seq_length=32
    )
    result = fine_tune(**prepared, output_dir=str(out), settings=settings, validation_labels_path=held_out)
    log = capfd.readouterr().err  # the processes' logs
    assert "rank 0/2 validation: ndcg@10" in log and "rank 1/2 validation: ndcg@10" not in log  # rank 0 evaluates
    for rank in (0, 1):  # ... and every rank records the same curve
        for step in (0, 2, 4):
            assert f"rank {rank}/2 fine_tune: validation NDCG@10 at step {step}:" in log, (rank, step)
    curve = result.metadata["validation_ndcg_curve"]
    assert [step for step, _ in curve] == [0, 2, 4] and result.metadata["chosen_step"] in (2, 4)
    assert result.metrics["validation_ndcg@10"] == max(score for step, score in curve if step)
