"""Retrieval metrics with trec_eval's semantics, in plain Python.

The reference is trec_eval (its Python binding `pytrec_eval`); the tests compare every number:

- documents of a query are ranked by score, descending; ties are broken by document id, descending
  (trec_eval compares the docno strings in reverse);
- relevance is "score >= 1"; NDCG uses the label score itself as the gain (graded), log2(rank + 1)
  discounts, and the ideal ranking of every judged document of that query;
- queries without any relevant label are skipped (no number, and not counted in the mean);
- `precision@k` divides by k even when fewer documents were retrieved; `mrr@10` is the reciprocal rank
  of the first relevant document in the top 10 (0 beyond); `map@100` is average precision over the top
  100, divided by the number of relevant documents.

Example:
    >>> qrels = {"q1": {"d1": 2, "d2": 0, "d3": 1}}
    >>> run = {"q1": {"d3": 0.9, "d1": 0.8, "d4": 0.7}}
    >>> m = query_metrics(qrels["q1"], run["q1"], k_values=(1, 3))
    >>> round(m["ndcg@3"], 4), m["recall@1"], m["mrr@10"]
    (0.8597, 0.5, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

K_VALUES = (1, 3, 5, 10, 100)
MEASURES = ("ndcg", "recall", "precision")


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Orders document ids as trec_eval does: score descending, then document id descending."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def metric_names(k_values: Iterable[int] = K_VALUES) -> list[str]:
    names = [f"{measure}@{k}" for measure in MEASURES for k in k_values]
    return names + ["mrr@10", "map@100"]


def query_metrics(
    labels: Mapping[str, int], scores: Mapping[str, float], k_values: Iterable[int] = K_VALUES
) -> dict[str, float] | None:
    """Every metric for one query, or None when the query has no relevant label (trec_eval skips it).

    Args:
        labels: document id -> label score (0 = judged not relevant).
        scores: document id -> retrieval score of the run.
        k_values: Cut-offs.
    """
    k_values = tuple(k_values)
    relevant = {doc for doc, score in labels.items() if score >= 1}
    if not relevant:
        return None
    ranking = rank_documents(scores)
    gains = [max(labels.get(doc, 0), 0) for doc in ranking]
    hits = [1 if doc in relevant else 0 for doc in ranking]
    ideal = sorted((max(score, 0) for score in labels.values()), reverse=True)

    def dcg(values, k):
        return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(values[:k]) if gain)

    result = {}
    for k in k_values:
        ideal_dcg = dcg(ideal, k)
        result[f"ndcg@{k}"] = dcg(gains, k) / ideal_dcg if ideal_dcg else 0.0
        result[f"recall@{k}"] = sum(hits[:k]) / len(relevant)
        result[f"precision@{k}"] = sum(hits[:k]) / k
    first = next((rank for rank, hit in enumerate(hits[:10]) if hit), None)
    result["mrr@10"] = 0.0 if first is None else 1.0 / (first + 1)
    found, precision_sum = 0, 0.0
    for rank, hit in enumerate(hits[:100]):
        if hit:
            found += 1
            precision_sum += found / (rank + 1)
    result["map@100"] = precision_sum / len(relevant)
    return result


def evaluate_run(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    k_values: Iterable[int] = K_VALUES,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Scores a run against labels.

    Returns:
        (mean of each metric over the evaluated queries, per-query metrics). A query is evaluated when it
        has a relevant label; a query with labels but no retrieved document scores 0.
    """
    k_values = tuple(k_values)
    per_query = {}
    for query_id, labels in qrels.items():
        metrics = query_metrics(labels, run.get(query_id, {}), k_values)
        if metrics is not None:
            per_query[query_id] = metrics
    names = metric_names(k_values)
    if not per_query:
        return {name: 0.0 for name in names}, {}
    means = {name: sum(m[name] for m in per_query.values()) / len(per_query) for name in names}
    return means, per_query
