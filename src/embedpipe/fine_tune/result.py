"""What a run reports: flat metrics for KFP, and the metadata written next to the tuned model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.model import BaseModel
from embedpipe.fine_tune.settings import FineTuneSettings
from embedpipe.fine_tune.trainer import TrainingLoss, TrainingRun

#: Metadata written next to the tuned model.
METADATA_FILE = "embedpipe_training.json"


@dataclass
class FineTuneResult:
    """What `fine_tune` produced.

    Attributes:
        model_dir: The sentence-transformers folder of the tuned model.
        metrics: Flat numbers for a KFP Metrics artifact (losses, steps, seconds, samples/s).
        metadata: Everything written to `embedpipe_training.json`.
    """

    model_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def build_result(
    output: Path,
    settings: FineTuneSettings,
    base: BaseModel,
    *,
    dimension: int,
    prompts,
    loss: TrainingLoss,
    run: TrainingRun,
    pairs: int,
    precision: str,
    validation=None,
    curve=None,
    split: str = "",
) -> FineTuneResult:
    """The metrics and metadata of a finished run.

    Args:
        output: The folder the tuned model was saved to.
        settings: The run's settings.
        base: The base model (trained in place).
        dimension: The trained embedding size, 0 for the base model's.
        prompts: `embedpipe.prompts.Prompts` the pairs were formatted with.
        loss: The loss trained with.
        run: What `train` reported.
        pairs: Number of training pairs.
        precision: "bf16" or "fp32".
        validation: The `embedpipe.fine_tune.validation.ValidationSet` scored during training, or None.
        curve: Its `embedpipe.fine_tune.early_stop.ValidationCurve`, or None.
        split: What the automatic validation split did ("" when validation labels were given).

    Returns:
        FineTuneResult of `output`.
    """
    losses = run.losses
    metrics: dict[str, float] = {
        "train_steps": run.global_step,
        "steps_this_run": run.steps_run,
        "resumed_from_step": run.resumed_step,
        "train_pairs": pairs,
        "train_seconds": round(run.seconds, 2),
        "samples_per_second": round(run.samples_per_second, 2),
        "steps_per_second": round(run.steps_per_second, 3),
        "train_loss": float(losses[-1][1]) if losses else run.mean_loss,
        "train_loss_first": float(losses[0][1]) if losses else run.mean_loss,
        "train_loss_min": float(min(v for _, v in losses)) if losses else run.mean_loss,
        "train_loss_mean": run.mean_loss,
        "dimension": dimension or base.dimension,
    }
    if run.validation_loss is not None:
        metrics["validation_loss"] = run.validation_loss
    selection = _selection(validation, curve, run)
    if selection:
        metrics.update(selection["metrics"])
    metadata = {
        "base_model": settings.base_model,
        "base_model_path": base.path,
        "task_type": settings.task_type,
        "prompts": prompts.to_dict(),
        "model_prompts": dict(base.model.prompts),
        "dimension": dimension or base.dimension,
        "base_dimension": base.dimension,
        "matryoshka_dims": loss.dims,
        "max_seq_length": int(base.model.max_seq_length),
        "batch_size": settings.batch_size,
        "train_steps": settings.train_steps,
        "learning_rate": settings.learning_rate,
        "learning_rate_multiplier": settings.learning_rate_multiplier,
        "loss": loss.name,
        "hard_negatives": bool(settings.mine_hard_negatives),
        "hard_negative_range_min": settings.hard_negative_range_min,
        "hard_negative_margin": settings.hard_negative_margin,
        "guided_loss": bool(settings.guided_loss),
        "symmetric_loss": bool(settings.symmetric_loss),
        "precision": precision,
        "device": base.device,
        "processes": run.processes,
        "seed": settings.seed,
        "seconds": round(run.seconds, 2),
        "loss_curve": [[int(step), float(value)] for step, value in losses],
        "validation_curve": [[int(step), float(value)] for step, value in run.validation_losses],
        "validation_split": split,
        "metrics": metrics,
    }
    if selection:
        metadata.update(selection["metadata"])
    return FineTuneResult(str(output), metrics, metadata)


def _selection(validation, curve, run: TrainingRun) -> dict[str, dict[str, Any]]:
    """The validation NDCG@10 figures: flat metrics (KFP shows them) and metadata (the report's curve)."""
    if validation is None or curve is None or curve.best_step is None:
        return {}
    metrics = {
        "validation_ndcg@10": float(curve.best_score),
        "chosen_step": int(curve.best_step),
        "stopped_early": int(curve.stopped_early),
        "validation_queries": validation.query_count,
        "validation_corpus_documents": len(validation.corpus),
    }
    if curve.base_score is not None:
        metrics["validation_ndcg@10_base"] = float(curve.base_score)
    metadata = {
        "validation_ndcg_curve": [[int(step), float(score)] for step, score in curve.points],
        "validation_ndcg_base": curve.base_score,
        "chosen_step": int(curve.best_step),
        "last_step": run.global_step,
        "stopped_early": bool(curve.stopped_early),
        "early_stopping_patience": curve.patience,
        "validation_source": validation.source,
        "validation_queries": validation.query_count,
        "validation_corpus": validation.description,
    }
    return {"metrics": metrics, "metadata": metadata}


def write_metadata(result: FineTuneResult) -> Path:
    """Writes `result.metadata` to `<model_dir>/embedpipe_training.json`; returns the file."""
    path = Path(result.model_dir) / METADATA_FILE
    path.write_text(json.dumps(result.metadata, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_result(model_dir: str | Path) -> FineTuneResult:
    """The FineTuneResult that `write_metadata` wrote to `<model_dir>/embedpipe_training.json`.

    Raises:
        FileNotFoundError: when the folder has no metadata (the run did not finish).
    """
    metadata = json.loads((Path(model_dir) / METADATA_FILE).read_text(encoding="utf-8"))
    return FineTuneResult(str(model_dir), dict(metadata["metrics"]), metadata)
