"""The evaluation report: one self-contained HTML page a reviewer can forward.

A metric table (each model, the difference and a paired significance test over queries), plots with axes
and ticks (per-query NDCG@10 of both models, the distribution of the gains with "unchanged" apart, recall@k
curves), and the queries that gained and lost most with their text, their labelled documents and what each
model ranked first. With one model: its metrics, the distribution of its NDCG@10 and its hardest queries.

The page needs no network and no JavaScript: plots are inline SVG, styles inline, so it shows the same in
a browser, a mail attachment and the Vertex AI console's sandboxed HTML viewer.

Example:
    >>> from embedpipe.reports import ReportTexts, evaluation_report                       # doctest: +SKIP
    >>> html = evaluation_report("test", evaluations, comparison, texts=ReportTexts(queries, corpus, labels))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedpipe.metrics import K_VALUES, metric_names, rank_documents

#: The per-query metric the plots and the gained/lost tables use (the quality gate's).
METRIC = "ndcg@10"
#: Queries listed in each of the "gained most" and "lost most" tables.
LISTED_QUERIES = 10
#: Deepest k of the recall curves (the evaluation retrieves this many documents).
RECALL_DEPTH = max(K_VALUES)
#: Characters of a document's text shown when it has no title.
TITLE_CHARS = 90


def short_name(reference: str) -> str:
    """A model reference short enough for a column header: a folder's last part, a hub id or "default" as is.

    >>> short_name("/tmp/runs/fine-tune/model/"), short_name("gs://b/tuned"), short_name("google/embeddinggemma-300m")
    ('model', 'tuned', 'google/embeddinggemma-300m')
    """
    reference = str(reference).rstrip("/")
    is_path = reference.startswith(("/", ".", "~", "gs://")) or reference.count("/") > 1
    return reference.rsplit("/", 1)[-1] if is_path and "/" in reference else reference


@dataclass
class ReportTexts:
    """What turns ids into words in the report: the split's queries, corpus and labels (DataFrames).

    Any may be None (a table's evaluation has no corpus file): ids are then shown without text.
    """

    queries: Any = None
    corpus: Any = None
    labels: Any = None
    _qrels: dict | None = field(default=None, repr=False)

    def query_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """Query id -> text, for the ids asked for."""
        if self.queries is None:
            return {}
        rows = self.queries[self.queries["_id"].astype(str).isin(set(ids))]
        return dict(zip(rows["_id"].astype(str), rows["text"].fillna("")))

    def titles(self, ids: Sequence[str]) -> dict[str, str]:
        """Document id -> title, or the start of its text when it has none, for the ids asked for."""
        if self.corpus is None:
            return {}
        rows = self.corpus[self.corpus["_id"].astype(str).isin(set(ids))]
        titles = rows["title"].fillna("") if "title" in rows else [""] * len(rows)
        found = {}
        for doc_id, title, text in zip(rows["_id"].astype(str), titles, rows["text"].fillna("")):
            found[doc_id] = title.strip() or (text[:TITLE_CHARS] + ("…" if len(text) > TITLE_CHARS else ""))
        return found

    def qrels(self) -> dict[str, dict[str, int]]:
        """Query id -> {document id: label score}; empty without labels."""
        if self._qrels is None:
            self._qrels = {}
            if self.labels is not None:
                for query, doc, score in self.labels[["query-id", "corpus-id", "score"]].itertuples(index=False):
                    self._qrels.setdefault(str(query), {})[str(doc)] = int(score)
        return self._qrels


@dataclass
class MetricRow:
    """One line of the metric table: each model's value, the difference of the second to the first."""

    name: str
    values: list[float]
    delta: float | None = None
    relative: float | None = None
    p_value: float | None = None
    better: int = 0
    worse: int = 0
    same: int = 0


@dataclass
class Document:
    """A document as a query table shows it."""

    id: str
    title: str
    label: int | None  # the query's label score of this document; None: not judged
    rank: int | None = None

    @property
    def relevant(self) -> bool:
        return (self.label or 0) >= 1


@dataclass
class QueryRow:
    """One query of a gained/lost/hardest table."""

    id: str
    text: str
    values: list[float]  # METRIC of each model
    labelled: list[Document]
    first: list[Document | None]  # what each model ranked first

    @property
    def delta(self) -> float:
        return self.values[-1] - self.values[0]


def metric_rows(evaluations: Sequence[Any]) -> list[MetricRow]:
    """Every metric of every model; with two or more, the second against the first over their common queries."""
    from embedpipe.reports.stats import paired_randomization_test

    rows = []
    for name in metric_names():
        row = MetricRow(name, [e.metrics[name] for e in evaluations])
        if len(evaluations) > 1:
            first, second = evaluations[0], evaluations[1]
            common = sorted(set(first.per_query) & set(second.per_query))
            a = [first.per_query[q][name] for q in common]
            b = [second.per_query[q][name] for q in common]
            row.delta = row.values[1] - row.values[0]
            row.relative = row.delta / row.values[0] if row.values[0] else None
            row.p_value = paired_randomization_test(a, b)
            row.better = sum(y > x + 1e-9 for x, y in zip(a, b))
            row.worse = sum(y < x - 1e-9 for x, y in zip(a, b))
            row.same = len(common) - row.better - row.worse
        rows.append(row)
    return rows


def first_ranked(evaluation: Any, query: str) -> str | None:
    """The document a model ranked first for a query (trec_eval's order: ties broken by id)."""
    docs = evaluation.run.get(query) or []
    return rank_documents(dict(docs))[0] if docs else None


def query_rows(evaluations: Sequence[Any], queries: Sequence[str], texts: ReportTexts) -> list[QueryRow]:
    """The table rows of `queries`, in that order, with texts and titles looked up once for all."""
    qrels = texts.qrels()
    firsts = {q: [first_ranked(e, q) for e in evaluations] for q in queries}
    labelled_ids = {q: sorted(qrels.get(q, {}), key=lambda d: (-qrels[q][d], d)) for q in queries}
    wanted = {d for q in queries for d in labelled_ids[q]} | {d for q in queries for d in firsts[q] if d}
    titles, query_texts = texts.titles(sorted(wanted)), texts.query_texts(queries)
    rows = []
    for q in queries:
        labels = qrels.get(q, {})

        def document(doc_id: str | None, labels=labels) -> Document | None:
            return None if doc_id is None else Document(doc_id, titles.get(doc_id, ""), labels.get(doc_id))

        rows.append(
            QueryRow(
                q,
                query_texts.get(q, ""),
                [e.per_query[q][METRIC] for e in evaluations],
                [document(d) for d in labelled_ids[q]],
                [document(d) for d in firsts[q]],
            )
        )
    return rows


def gained_and_lost(evaluations: Sequence[Any], texts: ReportTexts) -> tuple[list[QueryRow], list[QueryRow]]:
    """The LISTED_QUERIES queries whose METRIC rose most from the first model to the second, and those that fell
    most (only queries that changed; ties in order of query id)."""
    first, second = evaluations[0], evaluations[1]
    gains = {q: second.per_query[q][METRIC] - first.per_query[q][METRIC] for q in first.per_query}
    gains = {q: g for q, g in gains.items() if q in second.per_query and abs(g) > 1e-9}
    gained = sorted((q for q, g in gains.items() if g > 0), key=lambda q: (-gains[q], q))[:LISTED_QUERIES]
    lost = sorted((q for q, g in gains.items() if g < 0), key=lambda q: (gains[q], q))[:LISTED_QUERIES]
    pair = evaluations[:2]
    return query_rows(pair, gained, texts), query_rows(pair, lost, texts)


def hardest(evaluation: Any, texts: ReportTexts) -> list[QueryRow]:
    """The LISTED_QUERIES queries with the lowest METRIC (one model)."""
    queries = sorted(evaluation.per_query, key=lambda q: (evaluation.per_query[q][METRIC], q))[:LISTED_QUERIES]
    return query_rows([evaluation], queries, texts)


def recall_curve(evaluation: Any, qrels: Mapping[str, Mapping[str, int]]) -> list[tuple[int, float]]:
    """Mean recall@k for k = 1..RECALL_DEPTH over the evaluated queries; at the metrics' k values it equals
    the recall@k of the metric table. Without labels: the metric table's points alone."""
    queries = [q for q in evaluation.per_query if q in qrels]
    if not queries:
        return [(k, evaluation.metrics[f"recall@{k}"]) for k in K_VALUES]
    totals = [0.0] * RECALL_DEPTH
    for q in queries:
        relevant = {d for d, score in qrels[q].items() if score >= 1}
        found = 0
        ranking = rank_documents(dict(evaluation.run.get(q) or []))
        for k in range(RECALL_DEPTH):
            if k < len(ranking) and ranking[k] in relevant:
                found += 1
            totals[k] += found / len(relevant)
    return [(k + 1, total / len(queries)) for k, total in enumerate(totals)]


def plots(evaluations: Sequence[Any], texts: ReportTexts) -> list[tuple[str, str]]:
    """(caption, svg) of every plot of the report."""
    from embedpipe.reports import plots as draw

    names = [e.name for e in evaluations]
    curves = {name: recall_curve(e, texts.qrels()) for name, e in zip(names, evaluations)}
    recall = (
        "Mean recall@k of each model; dots at the metric table's cut-offs.",
        draw.recall_curves(curves, K_VALUES),
    )
    base = evaluations[0]
    if len(evaluations) == 1:
        values = [m[METRIC] for m in base.per_query.values()]
        return [("NDCG@10 per query, in tenths.", draw.value_histogram(values, names[0])), recall]
    tuned = evaluations[1]
    common = sorted(set(base.per_query) & set(tuned.per_query))
    pairs = [(base.per_query[q][METRIC], tuned.per_query[q][METRIC]) for q in common]
    return [
        (
            "NDCG@10 per query; queries with the same pair of values share a dot, sized and numbered by count.",
            draw.scatter_per_query(pairs, (names[0], names[1])),
        ),
        (
            f"How much each query gained or lost ({names[1]} − {names[0]}); unchanged queries have their own bar.",
            draw.gain_bars([t - b for b, t in pairs], (names[0], names[1])),
        ),
        recall,
    ]


def evaluation_report(
    split: str,
    evaluations: Sequence[Any],
    comparison: Any,
    retrieval: str = "exact cosine search",
    texts: ReportTexts | None = None,
) -> str:
    """The self-contained HTML report of one split's evaluation.

    Args:
        split: The split's name ("test", "validation").
        evaluations: `embedpipe.evaluate.ModelEvaluation`s: the first is compared with the second (base, tuned).
        comparison: `embedpipe.evaluate.Comparison` of the first two: its sentence is the report's verdict.
        retrieval: How the documents were found (a table's search modes for `evaluate --table`).
        texts: The split's queries, corpus and labels, to show query texts, titles and labelled documents
            (without them only ids are shown, and the recall curves have the metric table's points only).

    Returns:
        The HTML page.
    """
    from embedpipe.reports import render
    from embedpipe.reports.stats import DESCRIPTION

    texts = texts or ReportTexts()
    compared = len(evaluations) > 1
    gained, lost = gained_and_lost(evaluations, texts) if compared else ([], [])
    base = evaluations[0]
    return render(
        "evaluation.html.j2",
        split=split,
        verdict=comparison.sentence(),
        retrieval=retrieval,
        models=[
            {
                "name": e.name,
                "short": short_name(e.model),
                "reference": str(e.model),
                "seconds": e.seconds,
                "reused": bool(e.reused_embeddings),
            }
            for e in evaluations
        ],
        queries=len(base.per_query),
        documents=len(base.corpus_ids),
        rows=metric_rows(evaluations),
        test=DESCRIPTION,
        compared=compared,
        plots=plots(evaluations, texts),
        gained=gained,
        lost=lost,
        hardest=[] if compared else hardest(base, texts),
        listed=LISTED_QUERIES,
        metric="NDCG@10",
    )
