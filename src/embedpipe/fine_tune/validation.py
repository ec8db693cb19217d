"""Validation NDCG@10 during training: a fixed validation corpus and the evaluate stage's own scoring.

Re-encoding a whole corpus at every evaluation is too slow, so a run is scored on a fixed validation
corpus chosen once, before training, from the base model and the seed:

- a corpus of at most VALIDATION_CORPUS_MAX_DOCS documents is used whole (exactly the evaluate stage);
- a larger one is cut down to the validation queries' labelled documents, then the base model's top
  VALIDATION_HARD_K documents of each validation query (hard ones: those the base model ranks high), then a
  seeded random sample of the others, up to VALIDATION_CORPUS_MAX_DOCS documents in all. The base model
  ranks at most VALIDATION_CANDIDATE_DOCS documents (a seeded sample, labelled documents included) to find
  the hard ones, once.

Every evaluation is `embedpipe.evaluate.evaluate_model` on that corpus (the same prompts, exact search and
trec_eval NDCG@10 as the evaluate stage), so the numbers are comparable with each other, not with the
evaluate stage's figures on the full corpus (the validation corpus is smaller, so they are higher).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__package__)

#: The most documents in the validation corpus. Every evaluation encodes them all: on a CPU the validation
#: cost rivals the training's (benchmarks/README.md, "fine_tune validation cost"), so it is kept small.
VALIDATION_CORPUS_MAX_DOCS = 1000
#: Documents the base model ranks highest per validation query that join the validation corpus.
VALIDATION_HARD_K = 30
#: The most documents the base model ranks (once) to find the hard ones.
VALIDATION_CANDIDATE_DOCS = 3 * VALIDATION_CORPUS_MAX_DOCS
#: The metric that selects the checkpoint (the quality gate's).
VALIDATION_METRIC = "ndcg@10"


@dataclass(frozen=True)
class ValidationSet:
    """What each evaluation scores: the validation queries against a fixed validation corpus.

    Attributes:
        corpus: Validation corpus DataFrame (`_id`, `title`, `text`).
        queries: The validation queries (`_id`, `text`).
        labels: Validation labels (`query-id`, `corpus-id`, `score`).
        source: "given" (validation labels were given) or "split" (held out of the train labels).
        description: One line for the log and the metadata: how the corpus was chosen.
    """

    corpus: Any
    queries: Any
    labels: Any
    source: str
    description: str

    @property
    def query_count(self) -> int:
        """Validation queries with at least one positive label (the ones scored)."""
        return int(self.labels.loc[self.labels["score"].astype(int) >= 1, "query-id"].astype(str).nunique())


def validation_set(corpus, queries, labels, *, model, task_type: str, seed: int, source: str) -> ValidationSet:
    """Chooses the fixed validation corpus (see the module's docstring) for the validation labels.

    Args:
        corpus: The whole corpus DataFrame.
        queries: The queries DataFrame.
        labels: Validation labels DataFrame.
        model: The base model (a SentenceTransformer), which ranks the candidates.
        task_type: Selects the prompts.
        seed: Seed of the samples.
        source: "given" or "split".

    Returns:
        A ValidationSet.
    """
    import numpy as np

    labels = labels.assign(
        **{"query-id": labels["query-id"].astype(str), "corpus-id": labels["corpus-id"].astype(str)}
    )
    query_ids = set(labels["query-id"])
    queries = queries[queries["_id"].astype(str).isin(query_ids)]
    corpus = corpus.assign(_id=corpus["_id"].astype(str)).drop_duplicates("_id").reset_index(drop=True)
    if len(corpus) <= VALIDATION_CORPUS_MAX_DOCS:
        description = f"the whole corpus ({len(corpus)} documents)"
        return ValidationSet(corpus, queries, labels, source, description)

    rng = np.random.default_rng(seed)
    labelled = set(labels["corpus-id"])
    ids = corpus["_id"].tolist()
    others = [i for i in ids if i not in labelled]
    candidates = labelled | set(_sample(others, VALIDATION_CANDIDATE_DOCS - len(labelled), rng))
    ranked = _base_ranking(corpus[corpus["_id"].isin(candidates)], queries, labels, model, task_type)
    hard: list[str] = []
    for rank in range(VALIDATION_HARD_K):  # round-robin over the queries: each gets its hardest first
        hard += [docs[rank] for docs in ranked.values() if rank < len(docs)]
    chosen = dict.fromkeys(sorted(labelled))
    for doc in hard:
        if len(chosen) >= VALIDATION_CORPUS_MAX_DOCS:
            break
        chosen.setdefault(doc)
    n_hard = len(chosen) - len(labelled)
    rest = [i for i in others if i not in chosen]
    for doc in _sample(rest, VALIDATION_CORPUS_MAX_DOCS - len(chosen), rng):
        chosen.setdefault(doc)
    subset = corpus[corpus["_id"].isin(chosen)].reset_index(drop=True)
    description = (
        f"{len(subset)} of {len(corpus)} documents: {len(labelled)} labelled, {n_hard} of the base model's top "
        f"{VALIDATION_HARD_K} per query (among {len(candidates)} ranked), {len(subset) - len(labelled) - n_hard} "
        f"drawn at random (seed {seed})"
    )
    return ValidationSet(subset, queries, labels, source, description)


def _sample(items: list[str], size: int, rng) -> list[str]:
    if size >= len(items):
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), size=max(size, 0), replace=False))]


def _base_ranking(candidates, queries, labels, model, task_type: str) -> dict[str, list[str]]:
    from embedpipe.evaluate import evaluate_model

    ranked = evaluate_model(
        "base", candidates, queries, labels, name="validation corpus", task_type=task_type, loaded_model=model
    )
    return {query: [doc for doc, _ in docs] for query, docs in ranked.run.items()}


def validation_ndcg(model, validation: ValidationSet, *, task_type: str, batch_size: int = 64) -> float:
    """NDCG@10 of `model` (a SentenceTransformer, as it is now) on the validation set, by the evaluate stage.

    The model is put in eval mode for the evaluation (no dropout) and back in the mode it was in.
    """
    from embedpipe.evaluate import evaluate_model

    training = model.training
    model.eval()
    try:
        evaluation = evaluate_model(
            "training",
            validation.corpus,
            validation.queries,
            validation.labels,
            name="validation",
            task_type=task_type,
            batch_size=batch_size,
            loaded_model=model,
        )
    finally:
        model.train(training)
    return float(evaluation.metrics[VALIDATION_METRIC])
