"""The automatic validation split: a seeded share of the train QUERIES held out when no validation labels
are given, as Vertex's tuning pipeline does.

All the labels of a query go to the same side, so a held-out query is never seen in training. The number
of held-out queries is `share` of the train queries with a positive label, at least
VALIDATION_MIN_QUERIES and at most VALIDATION_MAX_QUERIES; with fewer than VALIDATION_MIN_TRAIN_QUERIES
train queries there are too few to spare and nothing is held out (the log says so).

Example:
    >>> import pandas as pd
    >>> labels = pd.DataFrame({"query-id": [f"q{i // 2}" for i in range(800)],
    ...                        "corpus-id": [f"d{i}" for i in range(800)], "score": 1})
    >>> split = split_validation(labels, share=0.1, seed=1)
    >>> split.validation["query-id"].nunique(), len(split.train) + len(split.validation)
    (40, 800)
    >>> split_validation(labels.head(100), share=0.1, seed=1).reason
    'no automatic validation split: 50 train queries, fewer than the 200 needed to spare some'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Fewer train queries (with a positive label) than this: no automatic validation split.
VALIDATION_MIN_TRAIN_QUERIES = 200
#: The fewest queries an automatic validation split holds (a smaller one would be too noisy to choose by).
VALIDATION_MIN_QUERIES = 20
#: The most queries an automatic validation split holds (the evaluations' cost grows with it).
VALIDATION_MAX_QUERIES = 300


@dataclass(frozen=True)
class ValidationSplit:
    """Train labels, split by query.

    Attributes:
        train: The labels training sees (all of them when nothing was held out).
        validation: The held-out queries' labels, or None.
        reason: One line for the log: what was held out, or why nothing was.
    """

    train: Any
    validation: Any
    reason: str


def validation_query_count(train_queries: int, share: float) -> int:
    """How many of `train_queries` queries an automatic split holds out (0: none).

    Example:
        >>> [validation_query_count(n, 0.1) for n in (100, 200, 809, 5000)]
        [0, 20, 81, 300]
    """
    if share <= 0 or train_queries < VALIDATION_MIN_TRAIN_QUERIES:
        return 0
    return min(VALIDATION_MAX_QUERIES, max(VALIDATION_MIN_QUERIES, math.ceil(share * train_queries)))


def split_validation(labels, *, share: float, seed: int) -> ValidationSplit:
    """Holds out a seeded share of the queries of `labels` (queries with at least one positive label).

    Args:
        labels: Train labels DataFrame (`query-id`, `corpus-id`, `score`).
        share: Share of the queries to hold out (0: none); see `validation_query_count`.
        seed: Seed of the draw (the same seed draws the same queries, so a resumed run splits alike).

    Returns:
        A ValidationSplit.
    """
    import numpy as np

    query_ids = labels["query-id"].astype(str)
    positive = sorted(set(query_ids[labels["score"].astype(int) >= 1]))
    count = validation_query_count(len(positive), share)
    if not count:
        why = (
            "validation_share is 0"
            if share <= 0
            else f"{len(positive)} train queries, fewer than the {VALIDATION_MIN_TRAIN_QUERIES} needed to spare some"
        )
        return ValidationSplit(labels, None, f"no automatic validation split: {why}")
    held_out = set(np.random.default_rng(seed).choice(positive, size=count, replace=False).tolist())
    is_held_out = query_ids.isin(held_out).to_numpy()
    reason = (
        f"automatic validation split: {count} of {len(positive)} train queries held out "
        f"({int(is_held_out.sum())} labels; share {share:g}, seed {seed}); training never sees them"
    )
    return ValidationSplit(labels[~is_held_out], labels[is_held_out], reason)
