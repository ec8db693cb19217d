"""fine_tune: fine-tune an open embedding model on the prepared train labels, with Vertex's parameters."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from embedpipe.images import TRAIN_IMAGE

# The GPU is asked for by the pipeline on the task, not here, so one definition serves CPU and GPU runs:
#   task.set_accelerator_type("NVIDIA_L4").set_accelerator_limit(1)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def fine_tune(
    corpus: Input[Dataset],
    queries: Input[Dataset],
    train_labels: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    validation_labels: Input[Dataset] = None,
    base_model: str = "default",
    task_type: str = "RETRIEVAL_QUERY",
    batch_size: int = 32,
    train_steps: int = 100,
    learning_rate_multiplier: float = 1.0,
    base_learning_rate: float = 0.0,
    output_dimensionality: int = 0,
    seed: int = 42,
    max_seq_length: int = 0,
    hard_negatives: bool = False,
    iterations: int = 0,
    hf_token_secret: str = "",
    validation_share: float = 0.1,
    validation_steps: int = 0,
    early_stopping_patience: int = 3,
):
    """Fine-tunes a sentence-transformers model on the positive (query, document) pairs of the train labels.

    MultipleNegativesRankingLoss with in-batch negatives and no duplicate texts in a batch; bf16 on GPUs
    that support it, fp32 on CPU. Checkpoints are written under the model folder, so a retried
    (preempted) task resumes from the last one; they are deleted once the model is saved. With more than
    one GPU on the task (accelerator_count > 1), one process per GPU trains with DistributedDataParallel
    (launched with torchrun), each taking `batch_size` pairs per step.

    Args:
        corpus: prepare_data's corpus (Parquet).
        queries: prepare_data's queries.
        train_labels: prepare_data's train labels; pairs with score 0 are not positives.
        validation_labels: prepare_data's validation labels; empty or absent: `validation_share` of the train
            queries are held out instead. They give a validation loss and NDCG@10 every `validation_steps`;
            the model saved is the step with the best validation NDCG@10 (`train_steps` is a ceiling).
        base_model: "default" (packaged all-MiniLM-L6-v2), a hub id (google/embeddinggemma-300m), or a
            local or gs:// sentence-transformers folder.
        task_type: Vertex task type (RETRIEVAL_QUERY, ...); selects the prompts.
        batch_size: Pairs per step and GPU (the in-batch negatives); above 64 the cached loss is used.
        train_steps: Optimiser steps (Vertex's `train_steps`, formerly `iterations`).
        learning_rate_multiplier: Times the base learning rate.
        base_learning_rate: The learning rate at multiplier 1; 0 = chosen by the data: 8e-5 with validation
            labels (given or split off; the best validation step is saved), else 2e-5.
        output_dimensionality: Embedding size of the tuned model (MatryoshkaLoss); 0 = the base model's.
        seed: Seed of shuffling and initialisation.
        max_seq_length: Tokens per text; 0 = the model's own.
        hard_negatives: Mine one hard negative per pair from the corpus with the base model, filtered against
            false negatives; a pair none passes for gets a random document not relevant to its query.
        iterations: The step count's name before Vertex template v1.1.3; used when `train_steps` is 0
            (`train_steps` wins when both are given: `embedpipe.vertex.resolve_train_steps`).
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated base model; read at run time, never logged.
        validation_share: Share of the train queries held out (by query) when there are no validation labels;
            0 = none (at least 20, at most 300 queries; none with fewer than 200 train queries).
        validation_steps: Steps between validation NDCG@10 evaluations; 0 = a fifth of the run.
        early_stopping_patience: Stop after this many evaluations without improvement; 0 = never early.

    Returns:
        model: A sentence-transformers folder (safetensors) with `embedpipe_training.json`; metadata
            base_model, task_type, dimension, prompts, train_steps.
        metrics: train_loss (last), train_loss_first, train_loss_min, train_loss_mean, validation_loss
            (with validation labels), train_steps, train_seconds, samples_per_second, dimension; with
            validation: validation_ndcg@10 (chosen step), validation_ndcg@10_base, chosen_step, stopped_early.
        report: HTML training report (`….html`): loss curve (and validation loss), validation NDCG@10 curve
            with the chosen step, steps, batch size, learning rate, time, examples/s.
    """
    import torch

    from embedpipe import storage
    from embedpipe.fine_tune import FineTuneSettings
    from embedpipe.fine_tune import fine_tune as tune
    from embedpipe.reports import html_uri, log_metrics, training_report

    settings = FineTuneSettings(
        base_model=base_model,
        task_type=task_type,
        batch_size=batch_size,
        train_steps=train_steps,
        learning_rate_multiplier=learning_rate_multiplier,
        base_learning_rate=base_learning_rate,
        output_dimensionality=output_dimensionality,
        seed=seed,
        max_seq_length=max_seq_length,
        mine_hard_negatives=hard_negatives,
        iterations=iterations,
        hf_token_secret=hf_token_secret,
        validation_share=validation_share,
        validation_steps=validation_steps,
        early_stopping_patience=early_stopping_patience,
        # The GPUs Vertex gave the task (accelerator_count): one process each, DistributedDataParallel when > 1.
        processes=max(1, torch.cuda.device_count()),
    )
    result = tune(
        corpus.path,
        queries.path,
        train_labels.path,
        model.path,
        settings,
        validation_labels_path=validation_labels.path if validation_labels is not None else "",
    )
    for key in ("base_model", "task_type", "dimension", "prompts", "train_steps"):
        model.metadata[key] = result.metadata[key]
    model.metadata["framework"] = "sentence-transformers"
    log_metrics(metrics, result.metrics)
    report.uri = html_uri(report.uri)  # opens in a browser; the type (system.HTML) stays
    storage.write_text_atomic(report.path, training_report(result.metadata))
