"""The loss, the training arguments and the training run, with progress logs and checkpoints to resume from.

A checkpoint is complete once the Trainer has written its `trainer_state.json`, the last file it writes;
a process killed while writing one leaves a folder without it, and `last_checkpoint` passes over it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.data import TrainingSet
from embedpipe.fine_tune.settings import (
    CACHED_LOSS_MINI_BATCH_SIZE,
    CHECKPOINTS_DIR,
    GUIDED_LOSS_TEMPERATURE,
    FineTuneSettings,
)
from embedpipe.progress import quiet_libraries

log = logging.getLogger(__package__)


@dataclass(frozen=True)
class TrainingLoss:
    """The loss the trainer minimises.

    Attributes:
        loss: The loss object given to the trainer (MatryoshkaLoss around `ranking` when truncating).
        ranking: The ranking loss (`ranking_loss`); `loss` itself without Matryoshka.
        dims: The Matryoshka dimensions, largest first (only the full dimension without Matryoshka).
    """

    loss: Any
    ranking: Any
    dims: list[int]

    @property
    def name(self) -> str:
        """E.g. "MultipleNegativesRankingLoss" or "MatryoshkaLoss(MultipleNegativesRankingLoss)"."""
        outer = type(self.loss).__name__
        return outer + (f"({type(self.ranking).__name__})" if self.loss is not self.ranking else "")


@dataclass(frozen=True)
class TrainingRun:
    """What a finished `train` reports.

    Attributes:
        batch_size: Pairs per step, in all processes together.
        global_step: The step count reached (including the steps of a resumed run).
        resumed_step: The step of the checkpoint resumed from (0: a fresh run).
        seconds: Wall time of this run's training.
        losses: (step, loss) of every logged step, the resumed run's included.
        mean_loss: The trainer's mean training loss.
        validation_loss: The final validation loss, or None without validation pairs.
        processes: Processes that trained together (DistributedDataParallel when more than 1).
        validation_losses: (step, validation loss) of every evaluation during training and the final one.
    """

    batch_size: int
    global_step: int
    resumed_step: int
    seconds: float
    losses: list[tuple[int, float]]
    mean_loss: float
    validation_loss: float | None = None
    processes: int = 1
    validation_losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def steps_run(self) -> int:
        """Steps this run trained (after the checkpoint it resumed from)."""
        return self.global_step - self.resumed_step

    @property
    def steps_per_second(self) -> float:
        """Steps this run trained per second."""
        return self.steps_run / max(self.seconds, 1e-9)

    @property
    def samples_per_second(self) -> float:
        """Pairs this run trained on per second."""
        return self.steps_run * self.batch_size / max(self.seconds, 1e-9)


def choose_precision(device: str) -> str:
    """ "bf16" on CUDA GPUs that support it, else "fp32". Never fp16: EmbeddingGemma's activations overflow it."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder under `<output_dir>/checkpoints`, or None.

    Complete: its `trainer_state.json` (written last) reads and says step N. A newer folder that a killed
    process left half-written is passed over; the resumed run writes it again when it gets there.
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR
    found = {}
    for checkpoint in folder.glob("checkpoint-*") if folder.is_dir() else ():
        step = checkpoint.name.rpartition("-")[2]
        if checkpoint.is_dir() and step.isdigit():
            found[int(step)] = checkpoint
    complete = [step for step, checkpoint in found.items() if _complete(checkpoint, step)]
    newest = max(complete, default=0)
    stopped = sorted(found[step].name for step in found if step > newest)
    if stopped:
        log.warning("fine_tune: passing over %s, which a stopped run left incomplete", ", ".join(stopped))
    return str(found[newest]) if complete else None


def _complete(checkpoint: Path, step: int) -> bool:
    # File names as transformers writes them (PREFIX_CHECKPOINT_DIR, TRAINER_STATE_NAME), without importing
    # the Trainer, so that watching a running training (as the resume test does) costs nothing.
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return state.get("global_step") == step


def build_loss(
    model, settings: FineTuneSettings, full_dimension: int, dimension: int, *, gather: bool = False
) -> TrainingLoss:
    """The ranking loss (`ranking_loss`), inside MatryoshkaLoss when `dimension` is set.

    Args:
        model: The model to train.
        settings: The run's settings (`batch_size`, `cached_loss`, `guided_loss`, `symmetric_loss`).
        full_dimension: The model's embedding size.
        dimension: The size to train for, 0 for the full one; Matryoshka halves the full size down to it.
        gather: Gather the embeddings of all processes of a distributed run, so that every pair of a step
            is an in-batch negative of the others (as in one process given the whole step).
    """
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    ranking = ranking_loss(model, settings, gather=gather)
    dims = [full_dimension]
    if not dimension:
        return TrainingLoss(ranking, ranking, dims)
    while dims[-1] // 2 > dimension:
        dims.append(dims[-1] // 2)
    dims.append(dimension)
    return TrainingLoss(MatryoshkaLoss(model, ranking, matryoshka_dims=dims), ranking, dims)


def ranking_loss(model, settings: FineTuneSettings, *, gather: bool = False):
    """The in-batch ranking loss the settings ask for.

    - default: MultipleNegativesRankingLoss (query to documents);
    - `symmetric_loss`: the same with `directions=("query_to_doc", "doc_to_query")`, one softmax per direction
      (what the deprecated MultipleNegativesSymmetricRankingLoss computed);
    - `guided_loss`: GISTEmbedLoss with a frozen copy of the base model as guide: in-batch (and mined)
      negatives the guide scores above the pair's positive are masked out of the softmax;
    - `use_cached_loss`: the Cached variant of each (gradient caching, mini-batches of
      CACHED_LOSS_MINI_BATCH_SIZE texts).

    Args:
        model: The model to train (the base model, before training: the guide is copied from it).
        settings: The run's settings.
        gather: As `build_loss`'s.
    """
    from sentence_transformers.sentence_transformer import losses

    cached = {"mini_batch_size": CACHED_LOSS_MINI_BATCH_SIZE} if settings.use_cached_loss else {}
    if settings.guided_loss:
        loss = losses.CachedGISTEmbedLoss if cached else losses.GISTEmbedLoss
        return loss(
            model,
            guide=guide_model(model),
            temperature=GUIDED_LOSS_TEMPERATURE,
            gather_across_devices=gather,
            **cached,
        )
    loss = losses.CachedMultipleNegativesRankingLoss if cached else losses.MultipleNegativesRankingLoss
    directions = {}
    if settings.symmetric_loss:
        directions = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
    return loss(model, gather_across_devices=gather, **cached, **directions)


def guide_model(model):
    """A frozen copy of `model` (on its device, in eval mode, no gradients), the guide of GISTEmbedLoss."""
    import copy

    guide = copy.deepcopy(model)
    guide.eval()
    for parameter in guide.parameters():
        parameter.requires_grad_(False)
    return guide


def batch_sampler():
    """How batches are drawn: no text twice in a batch (`NoDuplicatesBatchSampler`).

    Two positives of one query (the same anchor text) never share a batch, so neither is the other's
    in-batch negative; a document relevant to two queries is never in a batch twice either.
    """
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    return BatchSamplers.NO_DUPLICATES


def training_arguments(
    settings: FineTuneSettings, output: Path, device: str, precision: str, *, validation: bool, processes: int = 1
):
    """SentenceTransformerTrainingArguments: AdamW with linear warm-up and decay, no duplicate texts in a
    batch, checkpoints (the last one kept) under `<output>/checkpoints`.

    Args:
        settings: The run's settings.
        output: The output folder.
        device: The model's device.
        precision: `choose_precision(device)`.
        validation: Whether there are validation pairs (then evaluated at every checkpoint).
        processes: Processes of a distributed run (launched by torchrun; the Trainer reads the rest from
            its environment). More than 1: full batches only, since the loss gathers same-sized ones.
    """
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(
        output_dir=str(output / CHECKPOINTS_DIR),
        max_steps=settings.train_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type="linear",
        batch_sampler=batch_sampler(),
        bf16=precision == "bf16",
        fp16=False,
        use_cpu=not device.startswith("cuda"),
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.checkpoint_steps,
        save_total_limit=1,
        eval_strategy="steps" if validation else "no",
        eval_steps=settings.evaluation_steps if validation else None,
        logging_steps=settings.logging_steps,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_drop_last=processes > 1,
        disable_tqdm=True,
    )


def build_trainer(model, args, loss: TrainingLoss, data: TrainingSet, callbacks: Sequence[Any] = ()):
    """A SentenceTransformerTrainer that logs progress (`embedpipe.progress` lines) instead of printing it, and
    writes checkpoints from rank 0 only; the libraries' own INFO lines are hidden unless EMBEDPIPE_VERBOSE."""
    from sentence_transformers.sentence_transformer.trainer import (
        SentenceTransformerTrainer,
    )
    from transformers import PrinterCallback

    class Trainer(SentenceTransformerTrainer):
        def _save(self, output_dir=None, state_dict=None):
            # transformers 5 calls _save in every process and leaves it to _save to check should_save;
            # sentence-transformers' _save (6.2) does not, so every rank would write the same checkpoint files.
            if self.args.should_save:
                super()._save(output_dir, state_dict=state_dict)

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        loss=loss.loss,
        callbacks=[_progress_callback(), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # our progress log says the same, once
    quiet_libraries("transformers", "sentence_transformers")  # checkpoint saves and the like, per step
    return trainer


def train(trainer, resume_from: str | None) -> TrainingRun:
    """Trains, resuming from checkpoint `resume_from` when given; then computes the validation loss.

    Args:
        trainer: `build_trainer(...)`.
        resume_from: `last_checkpoint(output)`: the checkpoint a restarted run continues from, or None.
    """
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - started
    losses = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    validation_loss = None
    if trainer.eval_dataset is not None:
        validation_loss = float(trainer.evaluate()["eval_loss"])
    # The evaluations at checkpoints and the final one, once per step (the training report's validation curve).
    evaluated = {e["step"]: float(e["eval_loss"]) for e in trainer.state.log_history if "eval_loss" in e}
    resumed_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    return TrainingRun(
        trainer.args.per_device_train_batch_size * trainer.args.world_size,
        trainer.state.global_step,
        resumed_step,
        seconds,
        losses,
        float(result.training_loss),
        validation_loss,
        trainer.args.world_size,
        sorted(evaluated.items()),
    )


def release_device_memory(device: str) -> None:
    """Returns the GPU memory PyTorch keeps cached to the device (nothing on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _progress_callback():
    from transformers import TrainerCallback

    from embedpipe.progress import Progress

    class ProgressLog(TrainerCallback):
        """Progress lines (`embedpipe.progress`): steps, steps/s, ETA and the last logged loss."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step
            resumed = f" (resumed at step {self.first_step})" if self.first_step else ""
            # Counted from the resumed step, so that the rate and the ETA are this run's own.
            self.progress = Progress(f"training{resumed}", total=state.max_steps - self.first_step, unit="steps")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step < state.max_steps:  # the last line waits for on_train_end: the last loss is logged
                self.progress.set(state.global_step - self.first_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            # The Trainer calls on_log after on_step_end: a line shows the last loss logged before its step.
            if logs and "loss" in logs:
                self.progress.figures["loss"] = f"{logs['loss']:.4f}"

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.done = state.global_step - self.first_step
            self.progress.finish()

    return ProgressLog()
