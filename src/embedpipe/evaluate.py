"""Evaluating embedding models on prepared data: exact search, trec_eval metrics, base vs tuned.

Example:
    >>> from embedpipe.evaluate import evaluate_model, load_split            # doctest: +SKIP
    >>> corpus, queries, labels = load_split("corpus.parquet", "queries.parquet", "test_labels.parquet")  # doctest: +SKIP
    >>> result = evaluate_model("default", corpus, queries, labels, name="base")                # doctest: +SKIP
    >>> round(result.metrics["ndcg@10"], 3)                                                       # doctest: +SKIP
    0.645

Queries are embedded with the query prompt and documents with the document prompt of the task type
(`embedpipe.prompts`, the same as training, the Beam job and serving), retrieval is exact cosine search
(`embedpipe.retrieval.top_k`), and the metrics are trec_eval's (`embedpipe.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from embedpipe import storage
from embedpipe.metrics import K_VALUES, evaluate_run, rank_documents

log = logging.getLogger(__name__)

#: How many documents are retrieved per query (the deepest cut-off of the metrics).
RETRIEVE_K = max(K_VALUES)
#: The metric the quality gate compares.
GATE_METRIC = "ndcg@10"


@dataclass
class ModelEvaluation:
    """One model's results on one split.

    Attributes:
        name: "base" or "tuned" (used in metric names and file names).
        model: The model reference evaluated.
        metrics: Mean of each metric over the evaluated queries.
        per_query: query id -> metric -> value.
        run: query id -> [(document id, score), ...], best first (top RETRIEVE_K).
        corpus_ids: Document ids, in the row order of `corpus_embeddings`.
        corpus_embeddings: (n_docs, dim) float32, normalised.
        identity: What the embeddings depend on (model, prompts), to decide whether a cache is reusable.
        seconds: Wall time of this evaluation.
        reused_embeddings: Whether the corpus embeddings came from a cache.
        corpus_text_hashes: `text_hash` of each document's text as embedded (prompt included), in the
            row order of `corpus_embeddings`; None for embeddings saved without them.
    """

    name: str
    model: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: dict[str, list[tuple[str, float]]]
    corpus_ids: list[str]
    corpus_embeddings: object
    identity: dict = field(default_factory=dict)
    seconds: float = 0.0
    reused_embeddings: bool = False
    corpus_text_hashes: list[str] | None = None


def text_hash(text: str) -> str:
    """A short SHA-256 of the exact text a model embedded: tells whether a saved vector is this text's."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def load_split(corpus_path: str, queries_path: str, labels_path: str):
    """Reads prepared Parquet files (prepare_data's outputs) into DataFrames."""
    import pandas as pd

    return pd.read_parquet(corpus_path), pd.read_parquet(queries_path), pd.read_parquet(labels_path)


def qrels_from_labels(labels) -> dict[str, dict[str, int]]:
    """Labels DataFrame (`query-id`, `corpus-id`, `score`) -> {query: {document: score}}."""
    qrels: dict[str, dict[str, int]] = {}
    for query_id, corpus_id, score in labels[["query-id", "corpus-id", "score"]].itertuples(index=False):
        qrels.setdefault(str(query_id), {})[str(corpus_id)] = int(score)
    return qrels


def _identity(model_ref: str, model, prompts) -> dict:
    from embedpipe.models import embedding_dimension

    return {"model": model_ref, "prompts": prompts.to_dict(), "dimension": embedding_dimension(model)}


def evaluate_model(
    model: str,
    corpus,
    queries,
    labels,
    *,
    name: str = "model",
    task_type: str = "RETRIEVAL_QUERY",
    batch_size: int = 32,
    cached: ModelEvaluation | None = None,
    loaded_model=None,
    hf_token_secret: str = "",
) -> ModelEvaluation:
    """Embeds, retrieves and scores one model on one labelled split.

    Args:
        model: Model reference (see `embedpipe.models.resolve_model_path`).
        corpus: Corpus DataFrame (`_id`, `title`, `text`).
        queries: Queries DataFrame (`_id`, `text`).
        labels: Labels DataFrame of the split (`query-id`, `corpus-id`, `score`).
        name: "base" or "tuned".
        task_type: Selects the query and document prompts.
        batch_size: Texts per forward pass.
        cached: Earlier results whose corpus embeddings are reused when model, prompts and ids match.
        loaded_model: An already loaded SentenceTransformer for `model` (saves loading it again).
        hf_token_secret: Secret Manager secret version with a Hugging Face token, for a gated hub model
            ("" = none; see `embedpipe.models.use_hf_token`).

    Returns:
        ModelEvaluation.
    """
    from embedpipe.models import encode_in_chunks, load_model
    from embedpipe.prompts import resolve_prompts
    from embedpipe.retrieval import top_k

    started = time.monotonic()
    st_model = loaded_model if loaded_model is not None else load_model(model, hf_token_secret=hf_token_secret)
    prompts = resolve_prompts(task_type, st_model.prompts)
    identity = _identity(model, st_model, prompts)
    qrels = qrels_from_labels(labels)
    relevant = {q for q, docs in qrels.items() if any(score >= 1 for score in docs.values())}
    queries = queries[queries["_id"].isin(relevant)]
    corpus_ids = corpus["_id"].astype(str).tolist()

    texts = prompts.format_documents(corpus["text"].tolist(), corpus["title"].fillna("").tolist())
    hashes = [text_hash(text) for text in texts]
    reused = (
        cached is not None
        and cached.identity == identity
        and cached.corpus_ids == corpus_ids
        and cached.corpus_text_hashes == hashes  # same texts, not only the same ids
    )
    if reused:
        log.info("%s: reusing %d cached corpus embeddings", name, len(corpus_ids))
        corpus_embeddings = cached.corpus_embeddings
    else:
        corpus_embeddings = encode_in_chunks(st_model, texts, batch_size=batch_size, what=f"{name}: documents")
    query_embeddings = encode_in_chunks(
        st_model, prompts.format_queries(queries["text"].tolist()), batch_size=batch_size, what=f"{name}: queries"
    )
    scores, indices = top_k(query_embeddings, corpus_embeddings, RETRIEVE_K)
    query_ids = queries["_id"].astype(str).tolist()
    run = {
        query_id: [(corpus_ids[i], float(s)) for s, i in zip(row_scores, row_indices)]
        for query_id, row_scores, row_indices in zip(query_ids, scores, indices)
    }
    metrics, per_query = evaluate_run(qrels, {q: dict(docs) for q, docs in run.items()})
    seconds = time.monotonic() - started
    log.info(
        "%s: %s = %.4f over %d queries (%.0f s)", name, GATE_METRIC, metrics[GATE_METRIC], len(per_query), seconds
    )
    return ModelEvaluation(
        name, model, metrics, per_query, run, corpus_ids, corpus_embeddings, identity, seconds, reused, hashes
    )


@dataclass
class Comparison:
    """The quality gate's view: does tuned beat base by the margin?"""

    base: float
    tuned: float | None
    margin: float
    metric: str = GATE_METRIC
    base_name: str = "base"
    tuned_name: str = "tuned"

    @property
    def tuned_is_better(self) -> bool:
        return self.tuned is not None and self.tuned >= self.base + self.margin

    def sentence(self) -> str:
        if self.tuned is None:
            alone = "no tuned model given" if self.base_name == "base" else "nothing to compare with"
            return f"{self.base_name} {self.metric} = {self.base:.4f} ({alone})"
        verdict = "passes" if self.tuned_is_better else "does NOT pass"
        return (
            f"{self.tuned_name} {self.metric} = {self.tuned:.4f} vs {self.base_name} {self.base:.4f} "
            f"({self.tuned - self.base:+.4f}); the gate (margin {self.margin:+.4f}) {verdict}"
        )


def compare(base: ModelEvaluation, tuned: ModelEvaluation | None, margin: float = 0.0) -> Comparison:
    """The second evaluation against the first, each labelled by its name ("base", "tuned"; a search mode)."""
    return Comparison(
        base.metrics[GATE_METRIC],
        tuned.metrics[GATE_METRIC] if tuned else None,
        margin,
        base_name=base.name or "base",
        tuned_name=tuned.name if tuned and tuned.name else "tuned",
    )


def flat_metrics(split: str, evaluations: list[ModelEvaluation], comparison: Comparison) -> dict[str, float]:
    """Metric names as the Vertex UI shows them: `test/base/ndcg@10`, `test/tuned/ndcg@10`, ..."""
    values = {}
    for evaluation in evaluations:
        for metric, value in evaluation.metrics.items():
            values[f"{split}/{evaluation.name}/{metric}"] = round(float(value), 6)
        values[f"{split}/{evaluation.name}/queries"] = len(evaluation.per_query)
        values[f"{split}/{evaluation.name}/seconds"] = round(evaluation.seconds, 2)
    if comparison.tuned is not None:
        difference = f"{comparison.tuned_name}_minus_{comparison.base_name}"
        values[f"{split}/{difference}/{comparison.metric}"] = round(comparison.tuned - comparison.base, 6)
    return values


def per_query_table(evaluations: list[ModelEvaluation]):
    """One row per (model, query) with every metric."""
    import pandas as pd

    rows = [
        {"model": evaluation.name, "query-id": query_id, **metrics}
        for evaluation in evaluations
        for query_id, metrics in evaluation.per_query.items()
    ]
    return pd.DataFrame(rows)


def trec_run(evaluation: ModelEvaluation, run_name: str) -> str:
    """The run in TREC format: `qid Q0 docid rank score run_name`, ranks in trec_eval's order.

    Scores are float32 cosines written with 9 significant digits, enough to keep every distinct float32
    distinct: fewer (the usual `%.6f`) would create ties that trec_eval breaks by document id, and the run
    file would then score differently from the metrics computed here.
    """
    lines = []
    for query_id, docs in evaluation.run.items():
        scores = dict(docs)
        for rank, doc_id in enumerate(rank_documents(scores), start=1):
            lines.append(f"{query_id} Q0 {doc_id} {rank} {scores[doc_id]:.9g} {run_name}")
    return "\n".join(lines) + "\n"


def save_embeddings(evaluation: ModelEvaluation, folder: str | Path) -> None:
    """Writes `<name>.parquet` (`id`, `embedding`, `text_hash`) and `<name>.json` (identity) into a folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = evaluation.corpus_embeddings
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    columns = {
        "id": pa.array(evaluation.corpus_ids, type=pa.string()),
        "embedding": embedding.cast(pa.list_(pa.float32())),
    }
    if evaluation.corpus_text_hashes is not None:
        columns["text_hash"] = pa.array(evaluation.corpus_text_hashes, type=pa.string())
    table = pa.table(columns)
    with storage.atomic_path(folder / f"{evaluation.name}.parquet") as tmp:
        pq.write_table(table, tmp)
    storage.write_text_atomic(folder / f"{evaluation.name}.json", json.dumps(evaluation.identity, indent=2))


def load_embeddings(folder: str | Path, name: str) -> ModelEvaluation | None:
    """Reads embeddings saved by `save_embeddings` as a cache for `evaluate_model(cached=...)`."""
    import numpy as np
    import pyarrow.parquet as pq

    folder = Path(folder)
    data, info = folder / f"{name}.parquet", folder / f"{name}.json"
    if not (data.is_file() and info.is_file()):
        return None
    table = pq.read_table(data)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(
        table.num_rows, -1
    )
    identity = json.loads(info.read_text())
    hashes = table.column("text_hash").to_pylist() if "text_hash" in table.column_names else None
    return ModelEvaluation(
        name,
        identity.get("model", ""),
        {},
        {},
        {},
        table.column("id").to_pylist(),
        vectors,
        identity,
        corpus_text_hashes=hashes,
    )


@dataclass
class EvaluationOutputs:
    """Where run_evaluation writes; every path optional."""

    per_query: str = ""
    run_files: str = ""
    report: str = ""
    corpus_embeddings: str = ""


def run_evaluation(
    corpus_path: str,
    queries_path: str,
    labels_path: str,
    *,
    base_model: str = "default",
    tuned_model: str = "",
    task_type: str = "RETRIEVAL_QUERY",
    split: str = "test",
    margin: float = 0.0,
    batch_size: int = 32,
    reuse_embeddings: str = "",
    outputs: EvaluationOutputs | None = None,
    hf_token_secret: str = "",
) -> tuple[list[ModelEvaluation], Comparison, dict[str, float]]:
    """Evaluates the base model (and the tuned one, if given) and writes every output.

    Args:
        corpus_path, queries_path, labels_path: Prepared Parquet files.
        base_model: Base model reference.
        tuned_model: Tuned model folder ("" = evaluate the base model only).
        task_type: Selects the prompts.
        split: Name of the labels split, used in metric names ("test", "validation").
        margin: The tuned model passes the gate when its NDCG@10 >= base + margin.
        batch_size: Texts per forward pass.
        reuse_embeddings: A `corpus_embeddings` folder of an earlier evaluation to reuse.
        outputs: Where to write the per-query table, run files, report and embeddings.
        hf_token_secret: Secret Manager secret version with a Hugging Face token, for a gated hub model;
            read when a model is loaded, never logged ("" = none).

    Returns:
        (evaluations, comparison, flat metrics for the Metrics artifact).
    """
    from embedpipe.models import check_open_model, load_model
    from embedpipe.prompts import check_task_type
    from embedpipe.reports import ReportTexts, evaluation_report

    task_type = check_task_type(task_type)
    check_open_model(base_model, parameter="base_model")  # a Vertex AI model id, before any file is read
    corpus, queries, labels = load_split(corpus_path, queries_path, labels_path)
    if labels.empty or not (labels["score"] >= 1).any():
        raise ValueError(f"{labels_path}: the {split} labels have no relevant (score >= 1) pair; nothing to evaluate")
    outputs = outputs or EvaluationOutputs()
    evaluations = []
    for name, reference in (("base", base_model), ("tuned", tuned_model)):
        if name == "tuned" and not tuned_model:
            continue
        model = load_model(reference, hf_token_secret=hf_token_secret)
        cached = load_embeddings(reuse_embeddings, name) if reuse_embeddings else None
        evaluations.append(
            evaluate_model(
                reference,
                corpus,
                queries,
                labels,
                name=name,
                task_type=task_type,
                batch_size=batch_size,
                cached=cached,
                loaded_model=model,
            )
        )
    comparison = compare(evaluations[0], evaluations[1] if len(evaluations) > 1 else None, margin)
    flat = flat_metrics(split, evaluations, comparison)

    if outputs.per_query:
        with storage.atomic_path(outputs.per_query) as tmp:
            per_query_table(evaluations).to_parquet(tmp, index=False)
    if outputs.run_files:
        with storage.atomic_path(outputs.run_files) as tmp:
            tmp.mkdir()
            for evaluation in evaluations:
                (tmp / f"{split}.{evaluation.name}.trec").write_text(
                    trec_run(evaluation, f"embedpipe-{evaluation.name}")
                )
    if outputs.corpus_embeddings:
        with storage.atomic_path(outputs.corpus_embeddings) as tmp:
            for evaluation in evaluations:
                save_embeddings(evaluation, tmp)
    if outputs.report:
        report = evaluation_report(split, evaluations, comparison, texts=ReportTexts(queries, corpus, labels))
        storage.write_text_atomic(outputs.report, report)
    log.info(comparison.sentence())
    return evaluations, comparison, flat


class QualityGateError(RuntimeError):
    """The tuned model did not beat the base model by the margin; the pipeline stops here."""

    def __init__(self, comparison: Comparison):
        self.comparison = comparison
        super().__init__(
            f"quality gate: {comparison.sentence()}. Nothing was registered or indexed; the evaluation "
            "reports are kept. Set index_with_base_model=true to index with the base model anyway, or "
            "lower quality_margin."
        )
