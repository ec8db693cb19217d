"""A short learning-rate search on the validation split, before the full run (off by default).

With `FineTuneSettings.learning_rate_search` = (1, 2, 4), say, each multiplier of the run's learning rate
trains from the base model for LR_SEARCH_EVALUATIONS evaluations' worth of steps (at most `train_steps`),
on the train part only, and is scored by its best validation NDCG@10; the best multiplier (the earlier in the
list on a tie) then runs in full. Each trial has its own warm-up and decay over its short run, so it ranks
the rates, it does not predict the full run's score.

Cost: one short run per multiplier (its steps and evaluations, and choosing the validation corpus again),
logged and written into the metadata (`learning_rate_search`). The outcome is kept in
`<output>/checkpoints/lr_search.json`, so a resumed run does not search again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.settings import CHECKPOINTS_DIR, FineTuneError, FineTuneSettings

log = logging.getLogger(__package__)

#: Evaluations' worth of steps each trial trains.
LR_SEARCH_EVALUATIONS = 3
#: Where the outcome is kept (inside the checkpoints folder, deleted with it after a successful run).
LR_SEARCH_FILE = "lr_search.json"


def search_steps(settings: FineTuneSettings) -> int:
    """Steps of one trial: LR_SEARCH_EVALUATIONS evaluations' worth, at most `train_steps`."""
    return min(settings.train_steps, LR_SEARCH_EVALUATIONS * settings.evaluation_steps)


def search_learning_rate(
    settings: FineTuneSettings, output: Path, train: Callable[[str, FineTuneSettings], Any]
) -> tuple[FineTuneSettings, dict[str, Any]]:
    """Runs the trials and returns the settings of the full run (the chosen multiplier) and what it cost.

    Args:
        settings: The run's settings, with `learning_rate_search` set.
        output: The run's output folder (trials go under its checkpoints folder and are deleted).
        train: (output folder, trial settings) -> FineTuneResult: one trial (`run.run_training`).

    Returns:
        (settings of the full run, the search's record for the metadata).

    Raises:
        FineTuneError: when a trial had no validation NDCG@10 (no validation labels and no split).
    """
    folder = output / CHECKPOINTS_DIR
    done = folder / LR_SEARCH_FILE
    if done.is_file():
        record = json.loads(done.read_text(encoding="utf-8"))
        log.info("fine_tune: learning-rate search already done: multiplier %g", record["chosen_multiplier"])
        return _full_run(settings, record), record
    steps = search_steps(settings)
    trials = []
    started = time.monotonic()
    for factor in settings.learning_rate_search:
        multiplier = settings.learning_rate_multiplier * factor
        trial = dataclasses.replace(
            settings,
            learning_rate_multiplier=multiplier,
            train_steps=steps,
            early_stopping_patience=0,
            learning_rate_search=(),
            keep_checkpoints=False,
        )
        trial_started = time.monotonic()
        trial_dir = folder / "lr-search" / f"x{factor:g}"
        result = train(str(trial_dir), trial)
        shutil.rmtree(trial_dir, ignore_errors=True)
        score = result.metrics.get("validation_ndcg@10")
        if score is None:
            raise FineTuneError(
                "learning_rate_search needs validation NDCG@10: give validation labels, or enough train queries "
                "for the automatic split (validation_share > 0)"
            )
        trials.append(
            {
                "factor": factor,
                "multiplier": multiplier,
                "validation_ndcg@10": float(score),
                "chosen_step": int(result.metrics["chosen_step"]),
                "seconds": round(time.monotonic() - trial_started, 1),
            }
        )
        log.info("fine_tune: learning-rate search: multiplier %g -> validation NDCG@10 %.4f", multiplier, score)
    best = max(trials, key=lambda t: t["validation_ndcg@10"])  # max keeps the first of equals
    record = {
        "trials": trials,
        "steps_per_trial": steps,
        "chosen_multiplier": best["multiplier"],
        "seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "fine_tune: learning-rate search chose multiplier %g (%d trials of %d steps, %.0f s)",
        best["multiplier"],
        len(trials),
        steps,
        record["seconds"],
    )
    folder.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return _full_run(settings, record), record


def _full_run(settings: FineTuneSettings, record: dict[str, Any]) -> FineTuneSettings:
    return dataclasses.replace(settings, learning_rate_multiplier=record["chosen_multiplier"], learning_rate_search=())
