"""The settings of a fine-tuning run: one frozen object, checked once, before any file is read.

Example:
    >>> settings = FineTuneSettings(task_type="question_answering", iterations=20, batch_size=16)
    >>> settings.task_type, settings.train_steps, settings.checkpoint_steps
    ('QUESTION_ANSWERING', 20, 2)
    >>> FineTuneSettings(train_steps=-3)
    Traceback (most recent call last):
    ...
    embedpipe.fine_tune.settings.FineTuneError: train_steps must be >= 1, got -3
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, dataclass

from embedpipe.models import check_open_model
from embedpipe.prompts import check_task_type
from embedpipe.vertex import resolve_train_steps

#: The learning rate that `learning_rate_multiplier` multiplies (AdamW, linear decay after 10% warm-up) in a run
#: without validation labels: nothing would catch a rate that overfits (measured: benchmarks/README.md,
#: "fine_tune learning rate").
BASE_LEARNING_RATE = 2e-5
#: The same in a run with validation labels (given or split off): the best validation step is the one saved,
#: so a higher rate's early gains are kept and its later overfitting is not (same section).
VALIDATED_BASE_LEARNING_RATE = 8e-5
#: Batches larger than this use CachedMultipleNegativesRankingLoss (gradient caching) unless told otherwise.
CACHED_LOSS_BATCH_SIZE = 64
#: Mini-batch of the cached loss: texts per forward pass.
CACHED_LOSS_MINI_BATCH_SIZE = 32
#: Sub-folder of the output folder that holds the checkpoints of an unfinished run.
CHECKPOINTS_DIR = "checkpoints"
#: Hard-negative mining: ranks skipped at the top, and the relative margin below the positive's score.
DEFAULT_HARD_NEGATIVE_RANGE_MIN = 0
DEFAULT_HARD_NEGATIVE_MARGIN = 0.05
#: GISTEmbedLoss temperature: 1/20, the scale of MultipleNegativesRankingLoss, so that guiding alone differs.
GUIDED_LOSS_TEMPERATURE = 0.05
#: Optimiser steps when neither `train_steps` nor `iterations` is given.
DEFAULT_TRAIN_STEPS = 100
#: Share of the train queries held out for validation when no validation labels are given.
DEFAULT_VALIDATION_SHARE = 0.1
#: Validation evaluations (NDCG@10 and loss) in a run when `validation_steps` is not given.
DEFAULT_VALIDATION_EVALUATIONS = 5
#: Validation evaluations without improvement before training stops.
DEFAULT_EARLY_STOPPING_PATIENCE = 3


class FineTuneError(ValueError):
    """The inputs of a fine-tuning run are wrong; raised before training starts."""


@dataclass(frozen=True)
class FineTuneSettings:
    """Hyper-parameters and options of one fine-tuning run (Vertex's tuning parameters and a few more).

    Checked when made; the normalised values are stored (`task_type` upper-cased, `train_steps` resolved,
    0 for "the model's own" `output_dimensionality` and `max_seq_length`).

    Attributes:
        base_model: "default" (the packaged all-MiniLM-L6-v2), a local or `gs://` folder, or a hub id.
        task_type: Vertex task type; selects the prompts (see `embedpipe.prompts`).
        batch_size: Pairs per step (per process when `processes` > 1); the other documents of the step are the
            in-batch negatives.
        train_steps: Optimiser steps (Vertex's name). None/0: `iterations`, else 100
            (`embedpipe.vertex.resolve_train_steps`: `train_steps` wins when both are given).
        learning_rate_multiplier: Times the base learning rate (`base_learning_rate`).
        base_learning_rate: The learning rate at multiplier 1; None/0 = chosen by the data when the run
            starts (`for_validation`): VALIDATED_BASE_LEARNING_RATE (8e-5) with validation labels (given or
            split off), else BASE_LEARNING_RATE (2e-5).
        output_dimensionality: Embedding size of the tuned model; 0/None = the base model's. A smaller
            size trains with MatryoshkaLoss and saves a model that returns that many values.
        seed: Seed of the shuffling and of the initialisation.
        max_seq_length: Tokens per text; 0/None = the model's own.
        mine_hard_negatives: Add one hard negative per pair, mined from the corpus by the base model and
            filtered against false negatives (`embedpipe.fine_tune.negatives`): never a document any train
            label marks relevant to the query, nor one of its first `hard_negative_range_min` ranks, nor one
            scoring within `hard_negative_margin` of the positive; a pair none passes for gets a random document
            not relevant to its query.
        hard_negative_range_min: Ranks of the base model's ranking skipped at the top when mining.
        hard_negative_margin: Relative margin: a candidate scoring above positive - |positive| * margin is
            not a negative (0 to < 1).
        guided_loss: Filter in-batch false negatives with the base model as guide (GISTEmbedLoss, or
            CachedGISTEmbedLoss with `cached_loss`): a negative the guide scores above the pair's positive
            is left out of the softmax. Costs a second (no-gradient) forward pass of the guide per step.
        symmetric_loss: Rank in both directions (query to documents and document to queries,
            MultipleNegativesRankingLoss `directions`); not with `guided_loss`.
        cached_loss: Use CachedMultipleNegativesRankingLoss; None = when batch_size > 64.
        save_steps: Steps between checkpoints; None/0 = about a tenth of the run.
        warmup_fraction: Share of the steps of linear learning-rate warm-up.
        device: "cuda", "cpu", ...; None = CUDA when there is one.
        keep_checkpoints: Keep `checkpoints/` after a successful run (default: delete it).
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated base model; read when the model is loaded, never logged ("" = none).
        processes: Training processes, one per GPU. 1: the calling process trains. More: `fine_tune` launches
            that many with torchrun and trains with DistributedDataParallel, each process taking `batch_size`
            pairs per step (see `embedpipe.fine_tune.distributed`).
        validation_share: Share of the train queries held out (by query, seeded) as the validation split when
            no validation labels are given; 0 = none. Bounded by `embedpipe.fine_tune.split` (at least 20 and
            at most 300 queries; none with fewer than 200 train queries).
        validation_steps: Steps between validation NDCG@10 (and loss) evaluations, and the last step;
            None/0 = a fifth of the run (DEFAULT_VALIDATION_EVALUATIONS). With validation labels (given or
            split off), the saved model is the step with the best validation NDCG@10 and `train_steps` is a
            ceiling.
        early_stopping_patience: Stop after this many validation evaluations without improvement;
            0 = never stop early (the best step is still the one saved).
        learning_rate_search: Factors of `learning_rate_multiplier` to try first, e.g. (1, 2, 4): each trains
            a few evaluations' worth of steps from the base model and is scored on validation NDCG@10; the
            best then runs in full (`embedpipe.fine_tune.lr_search`). () = no search (the default).
        iterations: Older name of `train_steps` (init only); used when `train_steps` is not given.

    Raises:
        FineTuneError: when a value is out of range, `task_type` is unknown or `base_model` is a Vertex AI
            model id.
    """

    base_model: str = "default"
    task_type: str = "RETRIEVAL_QUERY"
    batch_size: int = 32
    train_steps: int | None = None
    learning_rate_multiplier: float = 1.0
    base_learning_rate: float | None = None
    output_dimensionality: int | None = 0
    seed: int = 42
    max_seq_length: int | None = 0
    mine_hard_negatives: bool = False
    hard_negative_range_min: int = DEFAULT_HARD_NEGATIVE_RANGE_MIN
    hard_negative_margin: float = DEFAULT_HARD_NEGATIVE_MARGIN
    guided_loss: bool = False
    symmetric_loss: bool = False
    cached_loss: bool | None = None
    save_steps: int | None = None
    warmup_fraction: float = 0.1
    device: str | None = None
    keep_checkpoints: bool = False
    hf_token_secret: str = ""
    processes: int = 1
    validation_share: float = DEFAULT_VALIDATION_SHARE
    validation_steps: int | None = 0
    early_stopping_patience: int = DEFAULT_EARLY_STOPPING_PATIENCE
    learning_rate_search: tuple[float, ...] = ()
    iterations: InitVar[int | None] = None

    def __post_init__(self, iterations: int | None) -> None:
        try:
            task_type = check_task_type(self.task_type)
            check_open_model(self.base_model, parameter="base_model")
        except ValueError as err:
            raise FineTuneError(str(err)) from None
        train_steps = resolve_train_steps(self.train_steps, iterations, default=DEFAULT_TRAIN_STEPS)
        if int(train_steps) < 1:
            raise FineTuneError(f"train_steps must be >= 1, got {train_steps}")
        if int(self.batch_size) < 2:
            raise FineTuneError(
                f"batch_size must be >= 2 (the other pairs of a batch are the negatives), got {self.batch_size}"
            )
        if not self.learning_rate_multiplier or self.learning_rate_multiplier <= 0:
            raise FineTuneError(f"learning_rate_multiplier must be > 0, got {self.learning_rate_multiplier}")
        if self.base_learning_rate is not None and not 0 <= float(self.base_learning_rate) < 1:
            raise FineTuneError(
                f"base_learning_rate must be > 0 and < 1 (0 = chosen by the data), got {self.base_learning_rate}"
            )
        from embedpipe.models import check_hf_token_secret

        try:
            check_hf_token_secret(self.hf_token_secret)
        except ValueError as err:
            raise FineTuneError(str(err)) from None
        if int(self.processes) < 1:
            raise FineTuneError(f"processes must be >= 1 (one per GPU), got {self.processes}")
        if int(self.hard_negative_range_min) < 0:
            raise FineTuneError(f"hard_negative_range_min must be >= 0, got {self.hard_negative_range_min}")
        if not 0 <= float(self.hard_negative_margin) < 1:
            raise FineTuneError(f"hard_negative_margin must be in [0, 1), got {self.hard_negative_margin}")
        if self.guided_loss and self.symmetric_loss:
            raise FineTuneError("guided_loss and symmetric_loss cannot be combined (GISTEmbedLoss has one direction)")
        output_dimensionality = int(self.output_dimensionality or 0)
        if output_dimensionality < 0:
            raise FineTuneError(f"output_dimensionality must be >= 0 (0 = the model's), got {output_dimensionality}")
        if not 0 <= float(self.validation_share) < 1:
            raise FineTuneError(f"validation_share must be >= 0 and < 1, got {self.validation_share}")
        if int(self.validation_steps or 0) < 0:
            raise FineTuneError(f"validation_steps must be >= 0 (0 = every checkpoint), got {self.validation_steps}")
        if int(self.early_stopping_patience) < 0:
            raise FineTuneError(
                f"early_stopping_patience must be >= 0 (0 = never), got {self.early_stopping_patience}"
            )
        search = tuple(float(factor) for factor in self.learning_rate_search or ())
        if any(factor <= 0 for factor in search):
            raise FineTuneError(f"learning_rate_search factors must be > 0, got {list(search)}")
        if search and int(self.processes) > 1:
            raise FineTuneError(
                f"learning_rate_search runs in one process only; give processes=1, not {self.processes}"
            )
        # Frozen: the normalised values are set once, here.
        object.__setattr__(self, "task_type", task_type)
        object.__setattr__(self, "train_steps", int(train_steps))
        object.__setattr__(self, "output_dimensionality", output_dimensionality)
        object.__setattr__(self, "max_seq_length", int(self.max_seq_length or 0))
        object.__setattr__(self, "processes", int(self.processes))
        object.__setattr__(self, "validation_share", float(self.validation_share))
        object.__setattr__(self, "validation_steps", int(self.validation_steps or 0))
        object.__setattr__(self, "early_stopping_patience", int(self.early_stopping_patience))
        object.__setattr__(self, "learning_rate_search", search)
        object.__setattr__(self, "base_learning_rate", float(self.base_learning_rate or 0) or None)

    def for_validation(self, validated: bool) -> FineTuneSettings:
        """These settings with the base learning rate fixed: the given one, else the one for a run with
        (`validated`) or without validation labels."""
        if self.base_learning_rate:
            return self
        base = VALIDATED_BASE_LEARNING_RATE if validated else BASE_LEARNING_RATE
        return dataclasses.replace(self, base_learning_rate=base)

    @property
    def learning_rate(self) -> float:
        """`base_learning_rate` (BASE_LEARNING_RATE until `for_validation` fixed it) times the multiplier."""
        return (self.base_learning_rate or BASE_LEARNING_RATE) * self.learning_rate_multiplier

    @property
    def warmup_steps(self) -> int:
        """Steps of linear learning-rate warm-up."""
        return int(self.warmup_fraction * self.train_steps)

    @property
    def checkpoint_steps(self) -> int:
        """Steps between checkpoints (and validation losses): `save_steps`, else about a tenth of the run."""
        return int(self.save_steps or max(1, math.ceil(self.train_steps / 10)))

    @property
    def evaluation_steps(self) -> int:
        """Steps between validation evaluations: `validation_steps`, else a fifth of the run.

        Each evaluation encodes the validation corpus: on a CPU a tenth of the run cost as much as the
        training itself (benchmarks/README.md, "fine_tune validation cost")."""
        return self.validation_steps or max(1, math.ceil(self.train_steps / DEFAULT_VALIDATION_EVALUATIONS))

    @property
    def logging_steps(self) -> int:
        """Steps between progress log lines: about twenty per run."""
        return max(1, self.train_steps // 20)

    @property
    def use_cached_loss(self) -> bool:
        """Whether the loss caches gradients: `cached_loss`, else when batch_size > CACHED_LOSS_BATCH_SIZE."""
        return self.cached_loss if self.cached_loss is not None else self.batch_size > CACHED_LOSS_BATCH_SIZE
