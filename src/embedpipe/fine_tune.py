"""Fine-tuning an embedding model on prepared train labels, with Vertex's tuning parameters.

The work is done by the sentence-transformers Trainer: MultipleNegativesRankingLoss over (query, relevant
document) pairs, with the other documents of the batch as negatives (CachedMultipleNegativesRankingLoss
when the batch is too large to fit at once), no duplicate texts in a batch, optional hard negatives
mined from the corpus, and MatryoshkaLoss when a smaller `output_dimensionality` is asked for.

Texts are formatted by `embedpipe.prompts` (the one place for prompts), exactly as evaluation, the
embedding job and serving format them, so a query is trained the way it is later embedded.

Everything that can be wrong with the inputs is checked before training starts. Checkpoints go to
`<output_dir>/checkpoints`; a restarted run (a preempted Vertex task) resumes from the last one.

Example:
    >>> from embedpipe.fine_tune import fine_tune                               # doctest: +SKIP
    >>> result = fine_tune("prepared/corpus.parquet", "prepared/queries.parquet",
    ...                    "prepared/train_labels.parquet", "tuned/", train_steps=100)  # doctest: +SKIP
    >>> result.metrics["train_loss"] < result.metrics["train_loss_first"]      # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: The learning rate that `learning_rate_multiplier` multiplies (AdamW, linear decay after 10% warm-up).
BASE_LEARNING_RATE = 2e-5
#: Batches larger than this use CachedMultipleNegativesRankingLoss (gradient caching) unless told otherwise.
CACHED_LOSS_BATCH_SIZE = 64
#: Mini-batch of the cached loss: texts per forward pass.
CACHED_LOSS_MINI_BATCH_SIZE = 32
#: Metadata written next to the tuned model.
METADATA_FILE = "embedpipe_training.json"
#: Sub-folder of the output folder that holds the checkpoints of an unfinished run.
CHECKPOINTS_DIR = "checkpoints"


class FineTuneError(ValueError):
    """The inputs of a fine-tuning run are wrong; raised before training starts."""


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


def training_pairs(corpus, queries, labels, prompts, *, split: str = "train"):
    """Turns prepared labels into formatted (anchor, positive) pairs.

    Only labels with score >= 1 are positives (score 0 means "judged not relevant").

    Args:
        corpus: Corpus DataFrame (`_id`, `title`, `text`).
        queries: Queries DataFrame (`_id`, `text`).
        labels: Labels DataFrame (`query-id`, `corpus-id`, `score`).
        prompts: `embedpipe.prompts.Prompts` of the task type and model.
        split: Name used in error messages.

    Returns:
        A pandas DataFrame with columns `anchor` (formatted query) and `positive` (formatted document).

    Raises:
        FineTuneError: when a label names a query or document that is not in the data.
    """
    import pandas as pd

    positives = labels[labels["score"].astype(int) >= 1]
    query_text = dict(zip(queries["_id"].astype(str), queries["text"].fillna("")))
    corpus = corpus.assign(_id=corpus["_id"].astype(str)).drop_duplicates("_id").set_index("_id")
    query_ids = positives["query-id"].astype(str).tolist()
    corpus_ids = positives["corpus-id"].astype(str).tolist()
    missing_queries = sorted({q for q in query_ids if q not in query_text})
    missing_docs = sorted({d for d in corpus_ids if d not in corpus.index})
    if missing_queries or missing_docs:
        raise FineTuneError(
            f"{split} labels name {len(missing_queries)} unknown query ids {missing_queries[:5]} and "
            f"{len(missing_docs)} unknown corpus ids {missing_docs[:5]}; give the corpus and queries prepared with them"
        )
    docs = corpus.loc[corpus_ids] if corpus_ids else corpus.iloc[:0]
    titles = docs["title"].fillna("").tolist() if "title" in docs else None
    return pd.DataFrame(
        {
            "anchor": prompts.format_queries([query_text[q] for q in query_ids]),
            "positive": prompts.format_documents(docs["text"].fillna("").tolist(), titles),
        }
    )


def choose_precision(device: str) -> str:
    """"bf16" on CUDA GPUs that support it, else "fp32". Never fp16: EmbeddingGemma's activations overflow it."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` folder under `<output_dir>/checkpoints`, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output_dir) / CHECKPOINTS_DIR
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _progress_callback(total_steps: int, batch_size: int):
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        """Logs loss, steps/s, samples/s and the ETA at every logging step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            self.first_step = state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            done = state.global_step - self.first_step
            rate = done / max(time.monotonic() - self.started, 1e-9)
            eta = (state.max_steps - state.global_step) / rate if rate else float("inf")
            log.info(
                "fine_tune: step %d/%d loss %.4f (%.2f steps/s, %.1f samples/s, ETA %.0f s)",
                state.global_step, state.max_steps, logs["loss"], rate, rate * batch_size, eta,
            )

    return ProgressLog()


def _check_model_folder(path: str, shown: str) -> None:
    folder = Path(path)
    if folder.is_dir() and not (folder / "modules.json").is_file():
        raise FineTuneError(
            f"base model {shown} is not a sentence-transformers model: {path} has no modules.json. "
            "Give a sentence-transformers folder (model.save(...)) or a hub id such as google/embeddinggemma-300m"
        )


def _truncating_modules(model, dimension: int):
    """The model's modules with a fixed truncation to `dimension` inserted before its Normalize (if any).

    Trained with MatryoshkaLoss, the first `dimension` values are a good embedding on their own; the
    saved model then returns them from `SentenceTransformer(path).encode(...)` like any other model.
    """
    import torch
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize

    modules = list(model._modules.values())
    full = int(model.get_embedding_dimension())
    trailing_normalize = isinstance(modules[-1], Normalize)
    body = modules[:-1] if trailing_normalize else modules
    truncate = Dense(full, dimension, bias=False, activation_function=None, init_weight=torch.eye(full)[:dimension].clone())
    truncate.linear.weight.requires_grad_(False)
    return body + [truncate] + ([Normalize()] if trailing_normalize else [])


def fine_tune(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    output_dir: str,
    *,
    validation_labels_path: str = "",
    base_model: str = "default",
    task_type: str = "RETRIEVAL_QUERY",
    batch_size: int = 32,
    train_steps: int | None = None,
    iterations: int | None = None,
    learning_rate_multiplier: float = 1.0,
    output_dimensionality: int | None = 0,
    seed: int = 42,
    max_seq_length: int | None = 0,
    mine_hard_negatives: bool = False,
    cached_loss: bool | None = None,
    save_steps: int | None = None,
    warmup_fraction: float = 0.1,
    device: str | None = None,
    callbacks: Sequence[Any] = (),
    keep_checkpoints: bool = False,
    gcs_client=None,
) -> FineTuneResult:
    """Fine-tunes a sentence-transformers model on the positive pairs of prepared train labels.

    Args:
        corpus_path: Prepared corpus Parquet (`_id`, `title`, `text`).
        queries_path: Prepared queries Parquet (`_id`, `text`).
        train_labels_path: Prepared train labels Parquet (`query-id`, `corpus-id`, `score`).
        output_dir: Local folder the tuned model is saved to (checkpoints go to its `checkpoints/`).
        validation_labels_path: Validation labels Parquet; when it has rows, the validation loss is
            computed at every checkpoint and at the end. "" or an empty table: none.
        base_model: "default" (the packaged all-MiniLM-L6-v2), a local or `gs://` folder, or a hub id.
        task_type: Vertex task type; selects the prompts (see `embedpipe.prompts`).
        batch_size: Pairs per step; the other documents of the batch are the in-batch negatives.
        train_steps: Optimiser steps (Vertex's name). Default 100.
        iterations: Older name of `train_steps`; used when `train_steps` is not given.
        learning_rate_multiplier: Times BASE_LEARNING_RATE (2e-5).
        output_dimensionality: Embedding size of the tuned model; 0/None = the base model's. A smaller
            size trains with MatryoshkaLoss and saves a model that returns that many values.
        seed: Seed of the shuffling and of the initialisation.
        max_seq_length: Tokens per text; 0/None = the model's own.
        mine_hard_negatives: Add one hard negative per pair, mined from the corpus by the base model.
        cached_loss: Use CachedMultipleNegativesRankingLoss; None = when batch_size > 64.
        save_steps: Steps between checkpoints; default about a tenth of the run.
        warmup_fraction: Share of the steps of linear learning-rate warm-up.
        device: "cuda", "cpu", ...; default: CUDA when there is one.
        callbacks: Extra `transformers.TrainerCallback`s.
        keep_checkpoints: Keep `checkpoints/` after a successful run (default: delete it).
        gcs_client: Storage client (or fake) for a `gs://` base model.

    Returns:
        FineTuneResult with the model folder, metrics and metadata.

    Raises:
        FineTuneError / embedpipe.models.ModelLoadError: bad inputs, before any training.
    """
    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    from embedpipe.models import ModelLoadError, default_device, resolve_model_path
    from embedpipe.prompts import check_task_type, resolve_prompts

    # -- check everything that can be checked without the model ----------------------------------
    try:
        task_type = check_task_type(task_type)
    except ValueError as err:
        raise FineTuneError(str(err)) from None
    if train_steps is None or train_steps == 0:
        train_steps = iterations if iterations else 100
    if int(train_steps) < 1:
        raise FineTuneError(f"train_steps must be >= 1, got {train_steps}")
    train_steps = int(train_steps)
    if int(batch_size) < 2:
        raise FineTuneError(f"batch_size must be >= 2 (the other pairs of a batch are the negatives), got {batch_size}")
    if not learning_rate_multiplier or learning_rate_multiplier <= 0:
        raise FineTuneError(f"learning_rate_multiplier must be > 0, got {learning_rate_multiplier}")
    output_dimensionality = int(output_dimensionality or 0)
    if output_dimensionality < 0:
        raise FineTuneError(f"output_dimensionality must be >= 0 (0 = the model's), got {output_dimensionality}")
    for name, path in (("corpus", corpus_path), ("queries", queries_path), ("train labels", train_labels_path)):
        if not Path(path).exists():
            raise FineTuneError(f"{name} file {path} does not exist; give prepare_data's output")
    corpus = pd.read_parquet(corpus_path)
    queries = pd.read_parquet(queries_path)
    train_labels = pd.read_parquet(train_labels_path)
    validation_labels = None
    if validation_labels_path and Path(validation_labels_path).exists():
        validation_labels = pd.read_parquet(validation_labels_path)
    n_positive = int((train_labels["score"].astype(int) >= 1).sum()) if len(train_labels) else 0
    if n_positive < batch_size:
        raise FineTuneError(
            f"{train_labels_path} has {n_positive} positive pairs (score >= 1), fewer than one batch of "
            f"batch_size={batch_size}; give more train labels or a smaller batch_size"
        )

    # -- the model -------------------------------------------------------------------------------
    model_path = resolve_model_path(base_model, gcs_client=gcs_client)
    _check_model_folder(model_path, base_model)
    device = device or default_device()
    try:
        model = SentenceTransformer(model_path, device=device)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load base model {base_model!r} from {model_path}: {err}") from err
    if max_seq_length:
        model.max_seq_length = int(max_seq_length)
    full_dimension = int(model.get_embedding_dimension())
    if output_dimensionality > full_dimension:
        raise FineTuneError(
            f"output_dimensionality={output_dimensionality} is larger than the dimension {full_dimension} "
            f"of {base_model}; give at most {full_dimension} (0 = {full_dimension})"
        )
    if output_dimensionality == full_dimension:
        output_dimensionality = 0
    prompts = resolve_prompts(task_type, model.prompts)

    pairs = training_pairs(corpus, queries, train_labels, prompts)
    unique_pairs = pairs.drop_duplicates()
    if len(unique_pairs) < batch_size:
        raise FineTuneError(f"{len(unique_pairs)} distinct training pairs, fewer than batch_size={batch_size}")
    eval_pairs = None
    if validation_labels is not None and (validation_labels["score"].astype(int) >= 1).sum() >= 2:
        eval_pairs = training_pairs(corpus, queries, validation_labels, prompts, split="validation")

    # -- data, loss, arguments -------------------------------------------------------------------
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train_dataset = Dataset.from_pandas(pairs, preserve_index=False)
    if mine_hard_negatives:
        from sentence_transformers.util import mine_hard_negatives as mine

        documents = prompts.format_documents(corpus["text"].fillna("").tolist(), corpus["title"].fillna("").tolist())
        log.info("fine_tune: mining hard negatives for %d pairs among %d documents", len(pairs), len(documents))
        # Texts are already formatted: empty prompts keep the model's default prompt from being added twice.
        train_dataset = mine(
            train_dataset, model, corpus=documents, num_negatives=1, range_min=0, relative_margin=0.05,
            sampling_strategy="top", query_prompt="", corpus_prompt="", batch_size=64,
            output_format="triplet", verbose=False,
        )
        log.info("fine_tune: %d (anchor, positive, negative) triplets", len(train_dataset))
    eval_dataset = Dataset.from_pandas(eval_pairs, preserve_index=False) if eval_pairs is not None else None

    use_cached = cached_loss if cached_loss is not None else batch_size > CACHED_LOSS_BATCH_SIZE
    inner = (
        CachedMultipleNegativesRankingLoss(model, mini_batch_size=CACHED_LOSS_MINI_BATCH_SIZE)
        if use_cached
        else MultipleNegativesRankingLoss(model)
    )
    if output_dimensionality:
        dims = [full_dimension]
        while dims[-1] // 2 > output_dimensionality:
            dims.append(dims[-1] // 2)
        dims.append(output_dimensionality)
        loss = MatryoshkaLoss(model, inner, matryoshka_dims=dims)
    else:
        dims = [full_dimension]
        loss = inner

    precision = choose_precision(device)
    save_steps = int(save_steps or max(1, math.ceil(train_steps / 10)))
    logging_steps = max(1, train_steps // 20)
    resume_from = last_checkpoint(output)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / CHECKPOINTS_DIR),
        max_steps=train_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=BASE_LEARNING_RATE * learning_rate_multiplier,
        warmup_steps=int(warmup_fraction * train_steps),
        lr_scheduler_type="linear",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        bf16=precision == "bf16",
        fp16=False,
        use_cpu=not device.startswith("cuda"),
        seed=seed,
        data_seed=seed,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1,
        eval_strategy="steps" if eval_dataset is not None else "no",
        eval_steps=save_steps if eval_dataset is not None else None,
        logging_steps=logging_steps,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=loss,
        callbacks=[_progress_callback(train_steps, batch_size), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # our progress log says the same, once
    log.info(
        "fine_tune: %s on %d pairs, %s, %d steps of %d, lr %.2g, %s on %s%s",
        base_model, len(pairs), type(inner).__name__, train_steps, batch_size, args.learning_rate, precision, device,
        f", resuming from {resume_from}" if resume_from else "",
    )

    # -- train -----------------------------------------------------------------------------------
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - started
    losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    eval_loss = None
    if eval_dataset is not None:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    resumed_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    steps_run = trainer.state.global_step - resumed_step

    # -- save ------------------------------------------------------------------------------------
    final = model
    if output_dimensionality:
        final = SentenceTransformer(modules=_truncating_modules(model, output_dimensionality), device=device)
        final.prompts = dict(model.prompts)
        final.default_prompt_name = model.default_prompt_name
    final.save(str(output), safe_serialization=True, create_model_card=False)
    if not keep_checkpoints:
        shutil.rmtree(output / CHECKPOINTS_DIR, ignore_errors=True)

    samples_per_second = steps_run * batch_size / max(seconds, 1e-9)
    metrics: dict[str, float] = {
        "train_steps": trainer.state.global_step,
        "steps_this_run": steps_run,
        "resumed_from_step": resumed_step,
        "train_pairs": len(pairs),
        "train_seconds": round(seconds, 2),
        "samples_per_second": round(samples_per_second, 2),
        "steps_per_second": round(steps_run / max(seconds, 1e-9), 3),
        "train_loss": float(losses[-1][1]) if losses else float(result.training_loss),
        "train_loss_first": float(losses[0][1]) if losses else float(result.training_loss),
        "train_loss_min": float(min(v for _, v in losses)) if losses else float(result.training_loss),
        "train_loss_mean": float(result.training_loss),
        "dimension": output_dimensionality or full_dimension,
    }
    if eval_loss is not None:
        metrics["validation_loss"] = eval_loss
    metadata = {
        "base_model": base_model,
        "base_model_path": model_path,
        "task_type": task_type,
        "prompts": prompts.to_dict(),
        "model_prompts": dict(model.prompts),
        "dimension": output_dimensionality or full_dimension,
        "base_dimension": full_dimension,
        "matryoshka_dims": dims,
        "max_seq_length": int(model.max_seq_length),
        "batch_size": batch_size,
        "train_steps": train_steps,
        "learning_rate": args.learning_rate,
        "learning_rate_multiplier": learning_rate_multiplier,
        "loss": type(loss).__name__ + (f"({type(inner).__name__})" if loss is not inner else ""),
        "hard_negatives": bool(mine_hard_negatives),
        "precision": precision,
        "device": device,
        "seed": seed,
        "seconds": round(seconds, 2),
        "loss_curve": [[int(step), float(value)] for step, value in losses],
        "metrics": metrics,
    }
    (output / METADATA_FILE).write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info(
        "fine_tune: done, %d steps in %.0f s (%.1f samples/s), loss %.4f -> %.4f; model in %s",
        metrics["train_steps"], seconds, samples_per_second, metrics["train_loss_first"], metrics["train_loss"], output,
    )
    del trainer
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return FineTuneResult(str(output), metrics, metadata)
