"""Choosing the checkpoint by validation NDCG@10, and stopping early when it stops improving.

`ValidationCurve` is the bookkeeping (no model, no files): the NDCG@10 of each evaluation, the best trained
step and the evaluations since the last improvement. `selection_callback` is the Trainer callback that
evaluates every `every` steps (and at the last step), keeps the best step's weights under
`<output>/checkpoints/best/` and asks the Trainer to stop after `patience` evaluations without improvement.

Rules:
- Step 0 is the base model's score: a reference, never the chosen step (the quality gate decides
  whether the tuned model beats the base).
- The chosen step is the trained step with the highest NDCG@10; on a tie, the earlier step.
- An evaluation improves when it beats every earlier one, step 0 included; after `patience` evaluations
  in a row that do not, training stops (patience 0: never early).
- The curve is part of each Trainer checkpoint (`trainer_state.json`, written last), and the best
  weights of every step a complete checkpoint may name are kept until a newer checkpoint is complete, so a
  preempted run that resumes carries on with the same best step, curve and patience count.

Example:
    >>> curve = ValidationCurve(patience=2)
    >>> [curve.record(step, score) for step, score in ((0, .5), (10, .6), (20, .6), (30, .55))]
    [False, True, False, False]
    >>> curve.best_step, curve.since_improvement, curve.should_stop
    (10, 2, True)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__package__)

#: Sub-folder of `checkpoints/` that holds the best step's weights (`step-N.pt`).
BEST_DIR = "best"


@dataclass
class ValidationCurve:
    """The validation NDCG@10 of a run so far, and what it decides.

    Attributes:
        patience: Evaluations without improvement before stopping; 0 = never stop early.
        points: (step, NDCG@10) of every evaluation, step 0 (the base model) first.
        best_step: The trained step with the highest NDCG@10 (the earlier on a tie), or None before one.
        best_score: Its NDCG@10.
        since_improvement: Evaluations since one beat all the earlier ones (step 0 included).
        stopped_early: Whether `should_stop` stopped the run.
    """

    patience: int = 0
    points: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    since_improvement: int = 0
    stopped_early: bool = False

    def record(self, step: int, score: float) -> bool:
        """Adds an evaluation; returns whether `step` is now the best trained step (its weights to keep)."""
        improved = not self.points or score > max(value for _, value in self.points)
        self.since_improvement = 0 if improved else self.since_improvement + 1
        self.points.append((int(step), float(score)))
        if step > 0 and (self.best_score is None or score > self.best_score):
            self.best_step, self.best_score = int(step), float(score)
            return True
        return False

    @property
    def should_stop(self) -> bool:
        """Whether `patience` evaluations in a row did not improve."""
        return self.patience > 0 and self.since_improvement >= self.patience

    @property
    def base_score(self) -> float | None:
        """The step-0 (base model) NDCG@10, or None."""
        return self.points[0][1] if self.points and self.points[0][0] == 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (kept in each Trainer checkpoint)."""
        return {
            "patience": self.patience,
            "points": [[step, score] for step, score in self.points],
            "best_step": self.best_step,
            "best_score": self.best_score,
            "since_improvement": self.since_improvement,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ValidationCurve:
        """The curve `to_dict` wrote."""
        return cls(
            int(state["patience"]),
            [(int(step), float(score)) for step, score in state["points"]],
            state["best_step"],
            state["best_score"],
            int(state["since_improvement"]),
            bool(state["stopped_early"]),
        )


def best_weights_path(checkpoints: Path, step: int) -> Path:
    """Where the weights of `step` are kept while it is the best (or a complete checkpoint names it)."""
    return Path(checkpoints) / BEST_DIR / f"step-{step}.pt"


def save_weights(model, path: Path) -> None:
    """Writes the model's state dict to `path` (through a temporary file, so a killed write leaves none)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({name: value.detach().cpu() for name, value in model.state_dict().items()}, partial)
    os.replace(partial, path)


def load_weights(model, path: Path) -> None:
    """Loads weights `save_weights` wrote into `model` (in place)."""
    import torch

    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def selection_callback(
    curve: ValidationCurve, evaluate: Callable[[Any], float], *, every: int, checkpoints: Path, writes: bool = True
):
    """The Trainer callback that evaluates, keeps the best weights and stops early (see the module docstring).

    Args:
        curve: The run's ValidationCurve (updated in place; restored from the checkpoint on resume).
        evaluate: model -> validation NDCG@10 (`embedpipe.fine_tune.validation.validation_ndcg`, or a
            scripted one in tests).
        every: Steps between evaluations; the last step is always evaluated.
        checkpoints: The run's checkpoints folder (the best weights go to its `best/`).
        writes: Whether this process writes files (rank 0).
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class ValidationSelection(TrainerCallback, ExportableState):
        def state(self) -> dict:
            # Saved into trainer_state.json with each checkpoint; read back in on_train_begin.
            return {"args": {}, "attributes": {"curve": curve.to_dict()}}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            stored = (state.stateful_callbacks or {}).get(type(self).__name__) or {}
            saved = stored.get("attributes", {}).get("curve") if isinstance(stored, dict) else None
            if state.global_step and saved:
                restored = ValidationCurve.from_dict(saved)
                curve.points, curve.best_step, curve.best_score = (
                    restored.points,
                    restored.best_step,
                    restored.best_score,
                )
                curve.since_improvement = restored.since_improvement
                log.info(
                    "fine_tune: resumed the validation curve at step %d (best step %s, NDCG@10 %s)",
                    state.global_step,
                    curve.best_step,
                    curve.best_score,
                )
            self._drop_weights(keep=curve.best_step, newer_than=state.global_step)
            if not curve.points and state.global_step == 0:
                self._evaluate(0, model)  # the base model (a checkpoint without a curve has no step 0 to score)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % every and step < state.max_steps:
                return control
            self._evaluate(step, model)
            if curve.should_stop:
                curve.stopped_early = True
                control.should_training_stop = True
                log.info(
                    "fine_tune: stopping early at step %d: NDCG@10 did not improve for %d evaluations; "
                    "best step %s (%.4f)",
                    step,
                    curve.patience,
                    curve.best_step,
                    curve.best_score,
                )
            return control

        def on_save(self, args, state, control, **kwargs):
            # The checkpoint just written names curve.best_step: older best weights are no longer needed.
            self._drop_weights(keep=curve.best_step)

        def _evaluate(self, step: int, model) -> None:
            score = evaluate(model)
            best = curve.record(step, score)
            if best and writes:
                save_weights(model, best_weights_path(checkpoints, step))
            log.info("fine_tune: validation NDCG@10 at step %d: %.4f%s", step, score, " (best so far)" if best else "")

        def _drop_weights(self, keep: int | None, newer_than: int | None = None) -> None:
            if not writes:
                return
            for path in (Path(checkpoints) / BEST_DIR).glob("step-*.pt"):
                step = int(path.stem.partition("-")[2])
                if step != keep and (newer_than is None or step > newer_than):
                    path.unlink(missing_ok=True)

    return ValidationSelection()
