"""`fine_tune`: one run, as a sequence of named steps (each in the module that owns it).

One process trains (`run_training`), unless `FineTuneSettings.processes` > 1: then `fine_tune` checks the
inputs here and launches that many processes with torchrun, each running `run_training` as one rank of a
DistributedDataParallel run (`embedpipe.fine_tune.distributed`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedpipe.fine_tune import distributed
from embedpipe.fine_tune.data import TrainingData, formatted_pairs, read_training_data, training_set
from embedpipe.fine_tune.early_stop import ValidationCurve, best_weights_path, load_weights, selection_callback
from embedpipe.fine_tune.lr_search import search_learning_rate
from embedpipe.fine_tune.model import BaseModel, load_base_model, output_dimension, save_model
from embedpipe.fine_tune.result import METADATA_FILE, FineTuneResult, build_result, read_result, write_metadata
from embedpipe.fine_tune.settings import CHECKPOINTS_DIR, FineTuneError, FineTuneSettings
from embedpipe.fine_tune.split import split_validation
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

    Run again with the same `output_dir` after being stopped (a preempted Vertex task), it resumes from the
    last complete checkpoint and ends at the same step count. With `settings.processes` > 1 the inputs are
    checked here (the model on the CPU), then that many torchrun processes train with
    DistributedDataParallel, and the result is read back from the metadata rank 0 wrote.

    Args:
        corpus_path: Prepared corpus Parquet (`_id`, `title`, `text`).
        queries_path: Prepared queries Parquet (`_id`, `text`).
        train_labels_path: Prepared train labels Parquet (`query-id`, `corpus-id`, `score`).
        output_dir: Local folder the tuned model is saved to (checkpoints go to its `checkpoints/`).
        settings: Hyper-parameters and options; default `FineTuneSettings()`.
        validation_labels_path: Validation labels Parquet. "" or an empty table: `settings.validation_share`
            of the train queries are held out instead (`embedpipe.fine_tune.split`). With validation labels
            (given or held out), the validation loss and NDCG@10 (`embedpipe.fine_tune.validation`) are computed
            every `settings.evaluation_steps` and at the end, the step with the best NDCG@10 is the saved model
            and training stops early after `settings.early_stopping_patience` evaluations without improvement
            (`embedpipe.fine_tune.early_stop`). Test labels are never an input.
        callbacks: Extra `transformers.TrainerCallback`s (one process only: they cannot cross to others).
        gcs_client: Storage client (or fake) for a `gs://` base model.
        **options: Instead of `settings`: its fields as keywords (`batch_size=8, train_steps=2, ...`).

    Returns:
        FineTuneResult with the model folder, metrics and metadata.

    Raises:
        FineTuneError / embedpipe.models.ModelLoadError: bad inputs, before any training.
        RuntimeError: a training process of a distributed run failed (its error is in the log).
    """
    if settings is None:
        settings = FineTuneSettings(**options)
    elif options:
        raise TypeError(f"give settings or keyword options, not both (got {', '.join(sorted(options))})")
    paths = (corpus_path, queries_path, train_labels_path, output_dir)
    if settings.processes > 1 and not distributed.launched():
        if callbacks:
            raise FineTuneError(f"callbacks run in one process only; give processes=1, not {settings.processes}")
        return _launch(*paths, settings, validation_labels_path=validation_labels_path, gcs_client=gcs_client)
    search = None
    if settings.learning_rate_search:
        settings, search = search_learning_rate(
            settings,
            Path(output_dir),
            lambda folder, trial: run_training(
                *paths[:3], folder, trial, validation_labels_path=validation_labels_path, gcs_client=gcs_client
            ),
        )
    result = run_training(
        *paths, settings, validation_labels_path=validation_labels_path, callbacks=callbacks, gcs_client=gcs_client
    )
    if search is not None:
        result.metadata["learning_rate_search"] = search
        result.metrics["learning_rate_search_seconds"] = search["seconds"]
        write_metadata(result)
    return result


def run_training(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    output_dir: str,
    settings: FineTuneSettings,
    *,
    validation_labels_path: str = "",
    callbacks: Sequence[Any] = (),
    gcs_client=None,
    base_model_path: str = "",
) -> FineTuneResult:
    """Trains in this process: the whole run, or one rank of a launched one (rank 0 alone writes files).

    Args:
        corpus_path, queries_path, train_labels_path, output_dir, validation_labels_path, callbacks,
            gcs_client: As `fine_tune`'s.
        settings: The run's settings.
        base_model_path: `settings.base_model` as the launcher resolved it (a `gs://` model copied once), or "".

    Returns:
        FineTuneResult with the model folder, metrics and metadata (written by rank 0 only).
    """
    # Check everything that can be checked before anything is written.
    inputs = _checked_inputs(
        corpus_path, queries_path, train_labels_path, validation_labels_path, settings, gcs_client, base_model_path
    )
    base, dimension, prompts = inputs.base, inputs.dimension, inputs.prompts
    settings = settings.for_validation(bool(inputs.validation_source))  # the data decide the base rate

    processes = distributed.world_size()
    validation_pairs = inputs.validation_pairs
    validation = inputs.validation  # rank 0's: it evaluates, and shares each score with the other ranks
    if processes > 1 and validation_pairs is not None and len(validation_pairs) < settings.batch_size:
        # Each process evaluates full batches only (the loss gathers same-sized ones): none here.
        log.warning(
            "fine_tune: %d validation pairs, fewer than one batch of %d: no validation loss with %d processes",
            len(validation_pairs),
            settings.batch_size,
            processes,
        )
        validation_pairs = None

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    dataset = training_set(
        inputs.pairs,
        validation_pairs,
        corpus=inputs.corpus,
        prompts=prompts,
        model=base.model,
        settings=settings,
        labels=inputs.train_labels,
    )
    loss = build_loss(base.model, settings, base.dimension, dimension, gather=processes > 1)
    precision = choose_precision(base.device)
    args = training_arguments(
        settings, output, base.device, precision, validation=dataset.validation is not None, processes=processes
    )
    resume_from = last_checkpoint(output)
    curve = ValidationCurve(settings.early_stopping_patience) if inputs.validation_source else None
    if curve is not None:
        callbacks = [*callbacks, _selection(validation, curve, settings, output, processes)]
    trainer = build_trainer(base.model, args, loss, dataset, callbacks)
    log.info(
        "fine_tune: %s on %d pairs, %s, %d steps of %d%s, lr %.2g, %s on %s%s",
        settings.base_model,
        dataset.pairs,
        type(loss.ranking).__name__,
        settings.train_steps,
        settings.batch_size,
        f" in each of {processes} processes (DistributedDataParallel)" if processes > 1 else "",
        args.learning_rate,
        precision,
        base.device,
        f", resuming from {resume_from}" if resume_from else "",
    )
    run = train(trainer, resume_from)

    writes = trainer.is_world_process_zero()
    if writes and curve is not None and curve.best_step is not None and curve.best_step != run.global_step:
        log.info(
            "fine_tune: saving step %d (validation NDCG@10 %.4f), the best of %d evaluations, not the last step %d",
            curve.best_step,
            curve.best_score,
            len(curve.points),
            run.global_step,
        )
        load_weights(base.model, best_weights_path(output / CHECKPOINTS_DIR, curve.best_step))
    if writes:
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
        validation=validation,
        curve=curve,
        split=inputs.split_reason,
    )
    if writes:
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


def _selection(validation, curve: ValidationCurve, settings: FineTuneSettings, output: Path, processes: int):
    """The selection callback; with several processes rank 0 evaluates and the others take its score."""
    from embedpipe.fine_tune.validation import validation_ndcg

    if validation is not None:
        log.info(
            "fine_tune: validation NDCG@10 every %d steps on %d %s validation queries against %s; patience %d",
            settings.evaluation_steps,
            validation.query_count,
            validation.source,
            validation.description,
            settings.early_stopping_patience,
        )

    def evaluate(model) -> float:
        score = validation_ndcg(model, validation, task_type=settings.task_type) if validation is not None else None
        return distributed.share_from_rank_zero(score) if processes > 1 else score

    return selection_callback(
        curve,
        evaluate,
        every=settings.evaluation_steps,
        checkpoints=output / CHECKPOINTS_DIR,
        writes=distributed.rank() == 0,
    )


@dataclass(frozen=True)
class _Inputs:
    """The checked inputs of a run: the base model, the sizes and prompts, the formatted pairs, the
    validation set (None without validation labels) and what the automatic split did."""

    base: BaseModel
    dimension: int
    prompts: Any
    corpus: Any
    pairs: Any
    validation_pairs: Any
    validation: Any = None
    split_reason: str = ""
    validation_source: str = ""
    train_labels: Any = None


def _checked_inputs(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    validation_labels_path: str,
    settings: FineTuneSettings,
    gcs_client,
    base_model_path: str = "",
) -> _Inputs:
    data = read_training_data(
        corpus_path, queries_path, train_labels_path, validation_labels_path, batch_size=settings.batch_size
    )
    data, source, split_reason = _with_validation(data, settings)
    base = load_base_model(settings, gcs_client=gcs_client, model_path=base_model_path)
    dimension = output_dimension(base, settings.output_dimensionality)
    prompts = resolve_prompts(settings.task_type, base.model.prompts)
    pairs, validation_pairs = formatted_pairs(data, prompts, batch_size=settings.batch_size)
    validation = None
    # Rank 0 of the training processes evaluates (one process: itself; not the launcher, which only checks).
    if source and distributed.rank() == 0 and (distributed.launched() or settings.processes == 1):
        from embedpipe.fine_tune.validation import validation_set

        validation = validation_set(
            data.corpus,
            data.queries,
            data.validation_labels,
            model=base.model,
            task_type=settings.task_type,
            seed=settings.seed,
            source=source,
        )
    return _Inputs(
        base,
        dimension,
        prompts,
        data.corpus,
        pairs,
        validation_pairs,
        validation,
        split_reason,
        source,
        data.train_labels,
    )


def _with_validation(data: TrainingData, settings: FineTuneSettings) -> tuple[TrainingData, str, str]:
    """The data with its validation labels: the given ones, else a split of the train queries.

    Returns:
        (data, source: "given", "split" or "" for none, the split's log line or "").
    """
    given = data.validation_labels
    if given is not None and (given["score"].astype(int) >= 1).sum() >= 1:
        return data, "given", ""
    split = split_validation(data.train_labels, share=settings.validation_share, seed=settings.seed)
    if split.validation is not None and (split.train["score"].astype(int) >= 1).sum() < settings.batch_size:
        reason = (
            f"no automatic validation split: it would leave fewer train pairs than batch_size={settings.batch_size}"
        )
        log.info("fine_tune: %s", reason)
        return data, "", reason
    log.info("fine_tune: %s", split.reason)
    if split.validation is None:
        return data, "", split.reason
    return (
        dataclasses.replace(data, train_labels=split.train, validation_labels=split.validation),
        "split",
        split.reason,
    )


def _launch(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    output_dir: str,
    settings: FineTuneSettings,
    *,
    validation_labels_path: str,
    gcs_client,
) -> FineTuneResult:
    from embedpipe.models import default_device

    distributed.check_processes(settings.processes, settings.device or default_device())
    # The processes check again, but an error is clearest here, before torchrun starts anything.
    checked = _checked_inputs(
        corpus_path,
        queries_path,
        train_labels_path,
        validation_labels_path,
        dataclasses.replace(settings, device="cpu"),
        gcs_client,
    )
    base_model_path = checked.base.path
    del checked
    arguments = distributed.worker_arguments(
        corpus_path,
        queries_path,
        train_labels_path,
        output_dir,
        settings,
        validation_labels_path=validation_labels_path,
        base_model_path=base_model_path,
    )
    (Path(output_dir) / METADATA_FILE).unlink(missing_ok=True)  # what is read back must be this run's
    distributed.run_processes(distributed.launch_command(settings.processes, arguments))
    return read_result(output_dir)
