"""Fine-tuning an embedding model on prepared train labels, with Vertex's tuning parameters.

The work is done by the sentence-transformers Trainer: MultipleNegativesRankingLoss over (query, relevant
document) pairs, with the other documents of the batch as negatives (CachedMultipleNegativesRankingLoss
when the batch is too large to fit at once), no duplicate texts in a batch, optional hard negatives
mined from the corpus and filtered against false negatives, an optional symmetric loss or in-batch negatives
filtered by the base model as guide (GISTEmbedLoss), and MatryoshkaLoss when a smaller
`output_dimensionality` is asked for.

Texts are formatted by `embedpipe.prompts` (the one place for prompts), exactly as evaluation, the
embedding job and serving format them, so a query is trained the way it is later embedded.

With validation labels (given, or a share of the train queries held out), validation NDCG@10 is computed
during training; the best step is the saved model and training stops early when it stops improving.

Everything that can be wrong with the inputs is checked before training starts. Checkpoints go to
`<output_dir>/checkpoints`; a restarted run (a preempted Vertex task, retried) resumes from the last
complete one, with the optimiser, scheduler, RNG and data order where they were, and ends at the same step
count as an uninterrupted run (with the same model, up to floating-point noise).

On one machine with several GPUs, `FineTuneSettings(processes=N)` launches N processes with torchrun, one
per GPU, that train together with DistributedDataParallel (`distributed`); one process (the default) trains
exactly as before.

Modules:
    settings: `FineTuneSettings` (the hyper-parameters, checked once), `FineTuneError`, the constants.
    data: reading and checking the prepared tables; formatted pairs (`training_pairs`); the datasets.
    negatives: hard negatives mined by the base model, never a labelled positive, rank and margin filters.
    model: loading the base model through `embedpipe.models`; saving the tuned (truncated) model.
    trainer: the loss (plain, symmetric or guided), the batch sampler, the training arguments, the progress log, training and resuming.
    split: the automatic validation split (a seeded share of the train queries, by query).
    validation: the fixed validation corpus and validation NDCG@10 by `embedpipe.evaluate`.
    early_stop: the validation curve, the best step, patience; the callback that keeps the best weights.
    lr_search: the optional learning-rate search before the full run.
    result: metrics and the `embedpipe_training.json` metadata (`FineTuneResult`).
    distributed: launching the processes of a multi-GPU run (torchrun) and what each one is.
    run: `fine_tune`, the steps in order; `run_training`, the steps of one process.
    __main__: `python -m embedpipe.fine_tune`, the command torchrun starts in each process.

Example:
    >>> from embedpipe.fine_tune import FineTuneSettings, fine_tune                       # doctest: +SKIP
    >>> result = fine_tune("prepared/corpus.parquet", "prepared/queries.parquet",
    ...                    "prepared/train_labels.parquet", "tuned/",
    ...                    FineTuneSettings(train_steps=100))                             # doctest: +SKIP
    >>> result.metrics["train_loss"] < result.metrics["train_loss_first"]                # doctest: +SKIP
    True
"""

from embedpipe.fine_tune.data import training_pairs
from embedpipe.fine_tune.result import METADATA_FILE, FineTuneResult
from embedpipe.fine_tune.run import fine_tune
from embedpipe.fine_tune.settings import (
    BASE_LEARNING_RATE,
    CACHED_LOSS_BATCH_SIZE,
    CACHED_LOSS_MINI_BATCH_SIZE,
    CHECKPOINTS_DIR,
    VALIDATED_BASE_LEARNING_RATE,
    FineTuneError,
    FineTuneSettings,
)
from embedpipe.fine_tune.trainer import choose_precision, last_checkpoint

__all__ = [
    "BASE_LEARNING_RATE",
    "VALIDATED_BASE_LEARNING_RATE",
    "CACHED_LOSS_BATCH_SIZE",
    "CACHED_LOSS_MINI_BATCH_SIZE",
    "CHECKPOINTS_DIR",
    "METADATA_FILE",
    "FineTuneError",
    "FineTuneResult",
    "FineTuneSettings",
    "choose_precision",
    "fine_tune",
    "last_checkpoint",
    "training_pairs",
]
