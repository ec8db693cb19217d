"""Scoring a table's search on a labelled split: the same metrics and report as `embedpipe.evaluate`.

The corpus is already in the table (uploaded by the pipeline or `PgVectorWriter`); each query is
searched through the database in one `hybrid.SearchSettings` mode, its top `RETRIEVE_K` rows become the
run, and `metrics.evaluate_run` scores it, so vector, full-text and hybrid search are measured exactly as
a model is. With `exact=True` the vector side reads every row (no index): mode "vector" then gives the
in-memory evaluation's figures, which the tests check.

Example:
    >>> from embedpipe.vectorstore.evaluation import evaluate_table                   # doctest: +SKIP
    >>> result = evaluate_table(uri, "embeddings", queries, labels, SearchSettings(mode="hybrid"))  # doctest: +SKIP
    >>> round(result.metrics["ndcg@10"], 3)                                             # doctest: +SKIP
    0.668
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from embedpipe.evaluate import GATE_METRIC, RETRIEVE_K, ModelEvaluation, qrels_from_labels
from embedpipe.metrics import evaluate_run
from embedpipe.vectorstore.hybrid import SearchSettings, search_table

log = logging.getLogger(__name__)


def evaluate_table(
    connect,
    table: str,
    queries,
    labels,
    settings: SearchSettings | None = None,
    *,
    model: str = "default",
    task_type: str = "RETRIEVAL_QUERY",
    batch_size: int = 32,
    loaded_model=None,
    query_vectors: Mapping[str, Sequence[float]] | None = None,
    name: str = "",
) -> ModelEvaluation:
    """Searches `table` for every labelled query and scores the results.

    Args:
        connect: URI, ConnectionSettings or connection factory (see PgVectorWriter).
        table: The table holding the corpus (ids are the corpus ids, or `docid#n` chunks: not merged).
        queries: Queries DataFrame (`_id`, `text`).
        labels: Labels DataFrame of the split (`query-id`, `corpus-id`, `score`).
        settings: The search mode and its parameters (default: vector).
        model: The model the corpus was embedded with (not loaded in mode "text").
        task_type: Selects the query prompt.
        batch_size: Queries per forward pass.
        loaded_model: An already loaded SentenceTransformer for `model`.
        query_vectors: Query id -> its embedding, computed already (the model is then not used); for
            scoring several settings with the same queries.
        name: Shown in the report and metric names (default: the mode).

    Returns:
        A ModelEvaluation without corpus embeddings; `identity` names the table and the settings.
    """
    settings = (settings or SearchSettings()).check()
    started = time.monotonic()
    qrels = qrels_from_labels(labels)
    relevant = {q for q, docs in qrels.items() if any(score >= 1 for score in docs.values())}
    queries = queries[queries["_id"].astype(str).isin(relevant)]
    query_ids = queries["_id"].astype(str).tolist()
    texts = queries["text"].tolist()
    vectors = [None] * len(texts)
    if settings.mode != "text" and query_vectors is not None:
        vectors = [query_vectors[query_id] for query_id in query_ids]
    elif settings.mode != "text":
        from embedpipe.models import encode_in_chunks, load_model
        from embedpipe.prompts import resolve_prompts

        st_model = loaded_model if loaded_model is not None else load_model(model)
        prompts = resolve_prompts(task_type, getattr(st_model, "prompts", None))
        vectors = encode_in_chunks(st_model, prompts.format_queries(texts), batch_size=batch_size, what="queries")
    run = {
        query_id: [(hit.id, hit.score) for hit in search_table(connect, table, text, vector, settings, k=RETRIEVE_K)]
        for query_id, text, vector in zip(query_ids, texts, vectors)
    }
    metrics, per_query = evaluate_run(qrels, {q: dict(docs) for q, docs in run.items()})
    seconds = time.monotonic() - started
    name = name or settings.mode
    log.info("%s search of %s: %s = %.4f over %d queries", name, table, GATE_METRIC, metrics[GATE_METRIC], len(run))
    identity = {"table": table, "model": model if settings.mode != "text" else "", "search": asdict(settings)}
    return ModelEvaluation(name, f"{table} ({settings.mode})", metrics, per_query, run, [], None, identity, seconds)


def load_table_split(connect, table: str, queries_path: str, labels_path: str):
    """Reads a BEIR queries file and labels TSV for `evaluate_table`, checking every label's corpus id
    against the ids in the table (the corpus is there, not in a file).

    Returns:
        (queries DataFrame `_id`, `text`; labels DataFrame `query-id`, `corpus-id`, `score`).

    Raises:
        DataValidationError: every problem with file, line and field (a label naming a document the
            table does not hold included); ValueError: no such table.
    """
    import pandas as pd
    from psycopg import sql

    from embedpipe import storage
    from embedpipe.beir import read_jsonl, read_labels
    from embedpipe.validation import ProblemCollector
    from embedpipe.vectorstore.postgres import PgVectorWriter
    from embedpipe.vectorstore.schema import existing_column_type

    problems = ProblemCollector()
    queries = read_jsonl(storage.read_bytes(queries_path), queries_path, problems, with_title=False)
    reader = PgVectorWriter(connect, table, index=None)

    def ids(session) -> list:
        if existing_column_type(session, table) is None:
            raise ValueError(f"table {table!r} does not exist; upload the corpus's vectors first")
        return session.execute(sql.SQL("SELECT id FROM {}").format(reader.ident))

    corpus_ids = {str(row[0]): 0 for row in reader.run_transaction(ids)[0]}
    labels = read_labels(
        storage.read_bytes(labels_path),
        labels_path,
        problems,
        query_ids=queries.line_of,
        corpus_ids=corpus_ids,
        queries_file=queries_path,
        corpus_file=f"table {table}",
    )
    problems.raise_if_any()
    queries_frame = pd.DataFrame([{"_id": r["_id"], "text": r["text"]} for r in queries.rows], columns=["_id", "text"])
    labels_frame = pd.DataFrame(
        [(label.query_id, label.corpus_id, label.score) for label in labels],
        columns=["query-id", "corpus-id", "score"],
    )
    if labels_frame.empty or not (labels_frame["score"] >= 1).any():
        raise ValueError(f"{labels_path}: no relevant (score >= 1) label; nothing to evaluate")
    return queries_frame, labels_frame
