"""The training report: the loss curve of a fine-tuning run and the numbers that say how it ran.

Rendered from the metadata `embedpipe.fine_tune` writes next to the tuned model
(`embedpipe_training.json`), so it can be written again later from a model folder alone.

Example:
    >>> from embedpipe.fine_tune.result import read_result                 # doctest: +SKIP
    >>> html = training_report(read_result("tuned-model").metadata)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _pairs(points) -> list[tuple[int, float]]:
    return [(int(step), float(value)) for step, value in points or []]


def training_facts(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(what, value) lines of the report's table, in reading order; absent values are left out."""
    metrics = metadata.get("metrics", {})
    facts = [
        ("base model", str(metadata.get("base_model", ""))),
        ("task type", str(metadata.get("task_type", ""))),
        ("loss", str(metadata.get("loss", ""))),
        ("steps", f"{int(metrics.get('train_steps', metadata.get('train_steps', 0))):,}"),
    ]
    if metrics.get("resumed_from_step"):
        facts.append(("resumed from step", f"{int(metrics['resumed_from_step']):,}"))
    facts += [
        (
            "batch size (pairs per step, all processes)",
            f"{int(metadata.get('batch_size', 0)) * int(metadata.get('processes', 1) or 1):,}",
        ),
        ("training pairs", f"{int(metrics.get('train_pairs', 0)):,}"),
        (
            "learning rate",
            f"{float(metadata.get('learning_rate', 0)):.3g} (multiplier {float(metadata.get('learning_rate_multiplier', 1)):g})",
        ),
        ("time", f"{float(metrics.get('train_seconds', metadata.get('seconds', 0))):,.1f} s"),
        ("examples / s", f"{float(metrics.get('samples_per_second', 0)):,.1f}"),
        ("steps / s", f"{float(metrics.get('steps_per_second', 0)):,.2f}"),
    ]
    if "train_loss_first" in metrics:
        facts.append(
            ("training loss (first → last logged)", f"{metrics['train_loss_first']:.4f} → {metrics['train_loss']:.4f}")
        )
    if metrics.get("validation_loss") is not None:
        facts.append(("validation loss (final)", f"{metrics['validation_loss']:.4f}"))
    facts += _selection_facts(metadata)
    dimension, base_dimension = metadata.get("dimension"), metadata.get("base_dimension")
    if dimension:
        facts.append(
            ("embedding size", f"{dimension}" + (f" (base {base_dimension})" if base_dimension != dimension else ""))
        )
    for key, what in (("max_seq_length", "max tokens per text"), ("precision", "precision"), ("device", "device")):
        if metadata.get(key) not in (None, ""):
            facts.append((what, str(metadata[key])))
    if metadata.get("processes", 1) and int(metadata.get("processes", 1)) > 1:
        facts.append(("processes (DistributedDataParallel)", str(metadata["processes"])))
    facts.append(("hard negatives mined", "yes" if metadata.get("hard_negatives") else "no"))
    return facts


def _selection_facts(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The validation NDCG@10 lines: the chosen step, the base and best scores, early stopping."""
    if metadata.get("chosen_step") is None:
        return []
    metrics = metadata.get("metrics", {})
    facts = [
        (
            "chosen step (best validation NDCG@10)",
            f"{int(metadata['chosen_step']):,} of {int(metadata.get('last_step', 0)):,}",
        )
    ]
    best, base = metrics.get("validation_ndcg@10"), metadata.get("validation_ndcg_base")
    if best is not None:
        facts.append(
            (
                "validation NDCG@10 (base → chosen)",
                (f"{float(base):.4f} → " if base is not None else "") + f"{float(best):.4f}",
            )
        )
    stopped = "yes" if metadata.get("stopped_early") else "no"
    facts.append(
        ("stopped early", f"{stopped} (patience {int(metadata.get('early_stopping_patience', 0))} evaluations)")
    )
    queries, source = metadata.get("validation_queries"), metadata.get("validation_source")
    if queries is not None:
        facts.append(
            (
                "validation queries",
                f"{int(queries):,} ({'held out of the train queries' if source == 'split' else 'given'})",
            )
        )
    if metadata.get("validation_corpus"):
        facts.append(("validation corpus", str(metadata["validation_corpus"])))
    return facts


def training_report(metadata: Mapping[str, Any]) -> str:
    """The self-contained HTML report of a fine-tuning run.

    Args:
        metadata: `FineTuneResult.metadata` (what `embedpipe_training.json` holds): `loss_curve` is
            [[step, loss], ...]; `validation_curve`, when there was validation data, the same for the
            validation loss; `validation_ndcg_curve` and `chosen_step`, when the run was scored on validation
            NDCG@10, draw the second figure.

    Returns:
        The HTML page.
    """
    from embedpipe.reports import plots, render

    train, validation = _pairs(metadata.get("loss_curve")), _pairs(metadata.get("validation_curve"))
    final = metadata.get("metrics", {}).get("validation_loss")
    if not validation and final is not None:
        # Runs that computed the validation loss only at the end still show it, as one point.
        validation = [(int(metadata.get("metrics", {}).get("train_steps", 0)), float(final))]
    ndcg = _pairs(metadata.get("validation_ndcg_curve"))
    return render(
        "training.html.j2",
        facts=training_facts(metadata),
        plot=plots.loss_curve(train, validation) if train or validation else "",
        ndcg_plot=plots.ndcg_curve(ndcg, metadata.get("chosen_step")) if ndcg else "",
        ndcg_evaluations=len(ndcg),
        chosen=metadata.get("chosen_step"),
        stopped_early=bool(metadata.get("stopped_early")),
        logged=len(train),
        evaluated=len(validation),
        model=str(metadata.get("base_model", "")),
    )
