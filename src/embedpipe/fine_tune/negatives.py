"""Hard negatives mined from the corpus by the base model, filtered against false negatives.

A mined "negative" that is in fact relevant teaches the model to push a right answer away; on a held-out set
the unfiltered mining of earlier versions (the top-ranked non-positive document, within 5% of the positive's
score) lowered NDCG@10. Three filters keep a candidate out, in this order:

1. it is labelled relevant to the query in ANY train label (every positive of the query, not only the pair's);
2. it ranks among the first `range_min` documents of the query (the ranks where unlabelled positives sit);
3. it scores above the positive's score times (1 - `relative_margin`) (too close to the positive to be a
   safe negative; NV-Retriever's "TopK-PercPos").

The first candidate (by the base model's rank) that passes all three is the pair's negative. A pair with
none in the first `MAX_CANDIDATES` ranks gets a document drawn at random (seeded) from those no label marks
relevant to its query, an easy negative, rather than being dropped: where the base model cannot rank the
corpus (a language it does not know) most pairs find no hard negative, and dropping them threw away most of
the training data (benchmarks/README.md, "fine_tune negatives"). Only a pair for which every document is
relevant is dropped. Both counts are logged.

Example:
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.85, 0.5, 0.4]])        # one pair, four documents
    >>> choose_negatives(scores, np.array([0.8]), [{0, 3}], range_min=0, relative_margin=0.1).indices
    [2]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__package__)

#: Candidates looked at per pair (by the base model's rank) before it gets a random negative instead.
MAX_CANDIDATES = 100
#: Queries scored against the corpus at once while mining (bounds the memory of the score matrix).
QUERY_CHUNK = 256


@dataclass(frozen=True)
class ChosenNegatives:
    """What `choose_negatives` picked, and why the others were skipped.

    Attributes:
        indices: Per pair, the corpus index of its negative, or None when no candidate passed.
        skipped_relevant: Candidates skipped because a train label says they are relevant to the query.
        skipped_rank: Candidates skipped because they ranked before `range_min`.
        skipped_margin: Candidates skipped because they scored within the margin of the positive.
    """

    indices: list[int | None]
    skipped_relevant: int = 0
    skipped_rank: int = 0
    skipped_margin: int = 0

    @property
    def found(self) -> int:
        """Pairs that got a negative."""
        return sum(index is not None for index in self.indices)


def relevant_documents(labels) -> dict[str, set[str]]:
    """Every document a label marks relevant (score >= 1) to each query.

    Args:
        labels: Labels DataFrame (`query-id`, `corpus-id`, `score`).

    Returns:
        {query id: {corpus ids}}.
    """
    positives = labels[labels["score"].astype(int) >= 1]
    relevant: dict[str, set[str]] = {}
    for query_id, corpus_id in zip(positives["query-id"].astype(str), positives["corpus-id"].astype(str)):
        relevant.setdefault(query_id, set()).add(corpus_id)
    return relevant


def choose_negatives(
    scores, positive_scores, relevant: list[set[int]], *, range_min: int, relative_margin: float
) -> ChosenNegatives:
    """Picks one negative per pair from its scores over the corpus.

    Args:
        scores: (pairs, documents) similarities of each pair's query to every candidate document (numpy).
        positive_scores: (pairs,) similarity of each pair's query to its positive.
        relevant: Per pair, the corpus indices labelled relevant to its query (never a negative).
        range_min: Ranks skipped at the top of each query's ranking.
        relative_margin: A candidate scoring above positive - |positive| * relative_margin is skipped.

    Returns:
        ChosenNegatives.
    """
    import numpy as np

    scores = np.asarray(scores)
    depth = min(scores.shape[1], range_min + MAX_CANDIDATES)
    # argpartition then sort: the first `depth` ranks of every row, in order.
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < scores.shape[1] else None
    indices: list[int | None] = []
    skipped_relevant = skipped_rank = skipped_margin = 0
    for row in range(scores.shape[0]):
        candidates = top[row] if top is not None else np.arange(scores.shape[1])
        ranked = candidates[np.argsort(-scores[row, candidates], kind="stable")]
        ceiling = positive_scores[row] - abs(positive_scores[row]) * relative_margin
        chosen = None
        for rank, doc in enumerate(ranked.tolist()):
            if doc in relevant[row]:
                skipped_relevant += 1
            elif rank < range_min:
                skipped_rank += 1
            elif scores[row, doc] > ceiling:
                skipped_margin += 1
            else:
                chosen = doc
                break
        indices.append(chosen)
    return ChosenNegatives(indices, skipped_relevant, skipped_rank, skipped_margin)


def fill_random_negatives(indices: list[int | None], relevant: list[set[int]], documents: int, seed: int) -> int:
    """Gives every pair without a negative a random document not relevant to its query, in place.

    Args:
        indices: Per pair, its negative's corpus index or None; the None entries are filled where possible.
        relevant: Per pair, the corpus indices relevant to its query.
        documents: Corpus size.
        seed: Seed of the draw.

    Returns:
        How many pairs got a random negative (a pair whose query every document is relevant to stays None).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    filled = 0
    for i, index in enumerate(indices):
        if index is not None or len(relevant[i]) >= documents:
            continue
        # Rejection sampling: relevant documents are few, so a draw is almost always taken at once.
        while (draw := int(rng.integers(documents))) in relevant[i]:
            pass
        indices[i] = draw
        filled += 1
    return filled


def mine_hard_negatives(
    pairs,
    corpus,
    labels,
    model,
    prompts,
    *,
    range_min: int,
    relative_margin: float,
    batch_size: int = 64,
    seed: int = 0,
) -> Any:
    """One filtered hard negative per pair, mined from the corpus by `model`.

    Args:
        pairs: Formatted pairs with ids (`anchor`, `positive`, `query-id`, `corpus-id`), as
            `training_pairs(..., with_ids=True)` returns them.
        corpus: Corpus DataFrame (`_id`, `title`, `text`) the negatives come from.
        labels: The train labels, or None; every document they or the pairs mark relevant to a query is kept
            from its negatives.
        model: The base model (SentenceTransformer), which ranks the corpus.
        prompts: `embedpipe.prompts.Prompts` that format the corpus documents.
        range_min: See `choose_negatives`.
        relative_margin: See `choose_negatives`.
        batch_size: Texts per forward pass while encoding.
        seed: Seed of the random negatives of the pairs no hard negative was found for.

    Returns:
        A DataFrame of (`anchor`, `positive`, `negative`) rows, in the pairs' order; a pair is left out only
        when every document of the corpus is relevant to its query.
    """
    import numpy as np
    import pandas as pd

    corpus = corpus.assign(_id=corpus["_id"].astype(str)).drop_duplicates("_id")
    documents = prompts.format_documents(corpus["text"].fillna("").tolist(), corpus["title"].fillna("").tolist())
    position = {doc_id: i for i, doc_id in enumerate(corpus["_id"])}
    relevant_ids = relevant_documents(labels) if labels is not None else {}
    for query_id, corpus_id in zip(pairs["query-id"].astype(str), pairs["corpus-id"].astype(str)):
        relevant_ids.setdefault(query_id, set()).add(corpus_id)
    log.info("fine_tune: mining hard negatives for %d pairs among %d documents", len(pairs), len(documents))
    # Texts are already formatted: an empty prompt keeps the model's default prompt from being added twice.
    encode = dict(prompt="", batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    doc_vectors = model.encode(documents, **encode)
    queries = pairs["anchor"].drop_duplicates().tolist()
    query_row = {text: i for i, text in enumerate(queries)}
    query_vectors = model.encode(queries, **encode)
    negatives: list[int | None] = []
    relevant_positions: list[set[int]] = []
    totals = np.zeros(3, dtype=int)
    for start in range(0, len(pairs), QUERY_CHUNK):
        chunk = pairs.iloc[start : start + QUERY_CHUNK]
        scores = query_vectors[[query_row[a] for a in chunk["anchor"]]] @ doc_vectors.T
        positive_columns = [position[str(c)] for c in chunk["corpus-id"]]
        positive_scores = scores[np.arange(len(chunk)), positive_columns]
        relevant = [{position[d] for d in relevant_ids[str(q)] if d in position} for q in chunk["query-id"]]
        chosen = choose_negatives(
            scores, positive_scores, relevant, range_min=range_min, relative_margin=relative_margin
        )
        negatives.extend(chosen.indices)
        relevant_positions.extend(relevant)
        totals += (chosen.skipped_relevant, chosen.skipped_rank, chosen.skipped_margin)
    hard = sum(negative is not None for negative in negatives)
    drawn = fill_random_negatives(negatives, relevant_positions, len(documents), seed)
    keep = [i for i, negative in enumerate(negatives) if negative is not None]
    log.info(
        "fine_tune: %d of %d pairs got a hard negative (range_min %d, relative margin %.2f), %d a random one "
        "(no candidate passed in the first %d ranks), %d none; skipped %d labelled relevant, %d top-ranked, "
        "%d within the margin",
        hard,
        len(pairs),
        range_min,
        relative_margin,
        drawn,
        MAX_CANDIDATES,
        len(pairs) - len(keep),
        *totals.tolist(),
    )
    return pd.DataFrame(
        {
            "anchor": pairs["anchor"].iloc[keep].tolist(),
            "positive": pairs["positive"].iloc[keep].tolist(),
            "negative": [documents[negatives[i]] for i in keep],
        }
    )
