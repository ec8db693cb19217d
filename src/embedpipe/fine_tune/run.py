"""`fine_tune`: one run, as a sequence of named steps (each in the module that owns it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.data import formatted_pairs, read_training_data, training_set
from embedpipe.fine_tune.model import load_base_model, output_dimension, save_model
from embedpipe.fine_tune.result import FineTuneResult, build_result, write_metadata
from embedpipe.fine_tune.settings import FineTuneSettings
from embedpipe.fine_tune.trainer import (
    build_loss,
    build_trainer,
    choose_precision,
    last_checkpoint,
    release_device_memory,
    train,
    training_arguments,
)
from embedpipe.prompts import resolve_prompts

log = logging.getLogger(__package__)


def fine_tune(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    output_dir: str,
    settings: FineTuneSettings | None = None,
    *,
    validation_labels_path: str = "",
    callbacks: Sequence[Any] = (),
    gcs_client=None,
    **options: Any,
) -> FineTuneResult:
    """Fine-tunes a sentence-transformers model on the positive pairs of prepared train labels.

    Args:
        corpus_path: Prepared corpus Parquet (`_id`, `title`, `text`).
        queries_path: Prepared queries Parquet (`_id`, `text`).
        train_labels_path: Prepared train labels Parquet (`query-id`, `corpus-id`, `score`).
        output_dir: Local folder the tuned model is saved to (checkpoints go to its `checkpoints/`).
        settings: Hyper-parameters and options; default `FineTuneSettings()`.
        validation_labels_path: Validation labels Parquet; when it has rows, the validation loss is
            computed at every checkpoint and at the end. "" or an empty table: none.
        callbacks: Extra `transformers.TrainerCallback`s.
        gcs_client: Storage client (or fake) for a `gs://` base model.
        **options: Instead of `settings`: its fields as keywords (`batch_size=8, train_steps=2, ...`).

    Returns:
        FineTuneResult with the model folder, metrics and metadata.

    Raises:
        FineTuneError / embedpipe.models.ModelLoadError: bad inputs, before any training.
    """
    if settings is None:
        settings = FineTuneSettings(**options)
    elif options:
        raise TypeError(f"give settings or keyword options, not both (got {', '.join(sorted(options))})")

    # Check everything that can be checked before anything is written.
    data = read_training_data(
        corpus_path, queries_path, train_labels_path, validation_labels_path, batch_size=settings.batch_size
    )
    base = load_base_model(settings, gcs_client=gcs_client)
    dimension = output_dimension(base, settings.output_dimensionality)
    prompts = resolve_prompts(settings.task_type, base.model.prompts)
    pairs, validation_pairs = formatted_pairs(data, prompts, batch_size=settings.batch_size)

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = training_set(
        pairs,
        validation_pairs,
        corpus=data.corpus,
        prompts=prompts,
        model=base.model,
        mine_hard_negatives=settings.mine_hard_negatives,
    )
    loss = build_loss(base.model, settings, base.dimension, dimension)
    precision = choose_precision(base.device)
    args = training_arguments(settings, output, base.device, precision, validation=dataset.validation is not None)
    resume_from = last_checkpoint(output)
    trainer = build_trainer(base.model, args, loss, dataset, callbacks)
    log.info(
        "fine_tune: %s on %d pairs, %s, %d steps of %d, lr %.2g, %s on %s%s",
        settings.base_model,
        dataset.pairs,
        type(loss.ranking).__name__,
        settings.train_steps,
        settings.batch_size,
        args.learning_rate,
        precision,
        base.device,
        f", resuming from {resume_from}" if resume_from else "",
    )
    run = train(trainer, resume_from)

    save_model(base, output, dimension, keep_checkpoints=settings.keep_checkpoints)
    result = build_result(
        output,
        settings,
        base,
        dimension=dimension,
        prompts=prompts,
        loss=loss,
        run=run,
        pairs=dataset.pairs,
        precision=precision,
    )
    write_metadata(result)
    log.info(
        "fine_tune: done, %d steps in %.0f s (%.1f samples/s), loss %.4f -> %.4f; model in %s",
        run.global_step,
        run.seconds,
        run.samples_per_second,
        result.metrics["train_loss_first"],
        result.metrics["train_loss"],
        output,
    )
    del trainer
    release_device_memory(base.device)
    return result
