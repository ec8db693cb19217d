"""The training data: prepared Parquet tables read and checked, turned into formatted pairs and datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.settings import FineTuneError


@dataclass(frozen=True)
class TrainingData:
    """The prepared tables a run trains on, as `embedpipe.prepare` writes them.

    Attributes:
        corpus: Corpus DataFrame (`_id`, `title`, `text`).
        queries: Queries DataFrame (`_id`, `text`).
        train_labels: Train labels DataFrame (`query-id`, `corpus-id`, `score`).
        validation_labels: Validation labels DataFrame, or None when none were given.
    """

    corpus: Any
    queries: Any
    train_labels: Any
    validation_labels: Any = None


@dataclass(frozen=True)
class TrainingSet:
    """What the trainer is given.

    Attributes:
        pairs: Number of formatted (anchor, positive) training pairs.
        train: `datasets.Dataset` of `anchor`, `positive` (and `negative` with hard negatives).
        validation: `datasets.Dataset` of validation pairs, or None.
    """

    pairs: int
    train: Any
    validation: Any = None


def read_training_data(
    corpus_path: str, queries_path: str, train_labels_path: str, validation_labels_path: str = "", *, batch_size: int
) -> TrainingData:
    """Reads prepared Parquet tables, checking that they exist and hold at least one batch of positives.

    Args:
        corpus_path: Prepared corpus Parquet.
        queries_path: Prepared queries Parquet.
        train_labels_path: Prepared train labels Parquet.
        validation_labels_path: Validation labels Parquet; "" or a missing file: none.
        batch_size: Pairs per step; the train labels must hold at least this many positives.

    Returns:
        The tables as a TrainingData.

    Raises:
        FineTuneError: when a file is missing or there are fewer positive pairs than one batch.
    """
    import pandas as pd

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
    return TrainingData(corpus, queries, train_labels, validation_labels)


def training_pairs(corpus, queries, labels, prompts, *, split: str = "train", with_ids: bool = False):
    """Turns prepared labels into formatted (anchor, positive) pairs.

    Only labels with score >= 1 are positives (score 0 means "judged not relevant").

    Args:
        corpus: Corpus DataFrame (`_id`, `title`, `text`).
        queries: Queries DataFrame (`_id`, `text`).
        labels: Labels DataFrame (`query-id`, `corpus-id`, `score`).
        prompts: `embedpipe.prompts.Prompts` of the task type and model.
        split: Name used in error messages.
        with_ids: Also return the `query-id` and `corpus-id` of each pair (hard-negative mining needs them).

    Returns:
        A pandas DataFrame with columns `anchor` (formatted query) and `positive` (formatted document), and
        with `with_ids` the ids.

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
            f"{len(missing_docs)} unknown corpus ids {missing_docs[:5]}; "
            "give the corpus and queries prepared with them"
        )
    docs = corpus.loc[corpus_ids] if corpus_ids else corpus.iloc[:0]
    titles = docs["title"].fillna("").tolist() if "title" in docs else None
    pairs = pd.DataFrame(
        {
            "anchor": prompts.format_queries([query_text[q] for q in query_ids]),
            "positive": prompts.format_documents(docs["text"].fillna("").tolist(), titles),
        }
    )
    return pairs.assign(**{"query-id": query_ids, "corpus-id": corpus_ids}) if with_ids else pairs


def formatted_pairs(data: TrainingData, prompts, *, batch_size: int):
    """The formatted train pairs and, with at least two validation positives, the validation pairs.

    Args:
        data: The prepared tables.
        prompts: `embedpipe.prompts.Prompts` of the task type and model.
        batch_size: Pairs per step; there must be at least this many distinct train pairs.

    Returns:
        (train pairs with their ids, validation pairs or None), DataFrames as `training_pairs` returns them.

    Raises:
        FineTuneError: when a label names unknown ids, or there are fewer distinct pairs than one batch.
    """
    pairs = training_pairs(data.corpus, data.queries, data.train_labels, prompts, with_ids=True)
    unique_pairs = pairs[["anchor", "positive"]].drop_duplicates()
    if len(unique_pairs) < batch_size:
        raise FineTuneError(f"{len(unique_pairs)} distinct training pairs, fewer than batch_size={batch_size}")
    validation = data.validation_labels
    if validation is None or (validation["score"].astype(int) >= 1).sum() < 2:
        return pairs, None
    return pairs, training_pairs(data.corpus, data.queries, validation, prompts, split="validation")


def training_set(pairs, validation_pairs, *, corpus, prompts, model, settings, labels=None) -> TrainingSet:
    """The datasets the trainer is given; with `settings.mine_hard_negatives`, one hard negative per pair.

    Args:
        pairs: Formatted train pairs (`anchor`, `positive`; with mining also `query-id`, `corpus-id`).
        validation_pairs: Formatted validation pairs, or None.
        corpus: Corpus DataFrame the hard negatives are mined from.
        prompts: `embedpipe.prompts.Prompts` that format the corpus documents.
        model: The base model, which ranks the corpus for mining.
        settings: `FineTuneSettings` (`mine_hard_negatives`, `hard_negative_range_min`, `hard_negative_margin`).
        labels: The train labels: no document labelled relevant to a query is mined as its negative.

    Returns:
        A TrainingSet.
    """
    from datasets import Dataset

    from embedpipe.fine_tune.negatives import mine_hard_negatives

    table = pairs[["anchor", "positive"]]
    if settings.mine_hard_negatives:
        table = mine_hard_negatives(
            pairs,
            corpus,
            labels,
            model,
            prompts,
            range_min=settings.hard_negative_range_min,
            relative_margin=settings.hard_negative_margin,
            seed=settings.seed,
        )
    train = Dataset.from_pandas(table, preserve_index=False)
    validation = None
    if validation_pairs is not None:
        validation = Dataset.from_pandas(validation_pairs[["anchor", "positive"]], preserve_index=False)
    return TrainingSet(len(pairs), train, validation)
