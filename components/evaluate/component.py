"""evaluate: NDCG@10 and friends of the base (and tuned) model on a labelled split; the quality gate."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    corpus: Input[Dataset],
    queries: Input[Dataset],
    labels: Input[Dataset],
    metrics: Output[Metrics],
    per_query: Output[Dataset],
    run_files: Output[Dataset],
    report: Output[HTML],
    corpus_embeddings: Output[Dataset],
    base_model: str = "default",
    tuned_model: Input[Model] = None,
    reuse_embeddings: Input[Dataset] = None,
    task_type: str = "RETRIEVAL_QUERY",
    split: str = "test",
    margin: float = 0.0,
    batch_size: int = 32,
    hf_token_secret: str = "",
) -> NamedTuple("EvaluateOutputs", tuned_is_better=bool, base_ndcg_at_10=float, tuned_ndcg_at_10=float):
    """Evaluates retrieval quality exactly as trec_eval scores it, for the base and (optionally) tuned model.

    Args:
        corpus: prepare_data's corpus (Parquet).
        queries: prepare_data's queries.
        labels: The labels of one split (prepare_data's `test_labels` or `validation_labels`).
        base_model: Base model reference: "default" (packaged all-MiniLM-L6-v2), a hub id, a local or gs:// folder.
        tuned_model: fine_tune's model; when not connected only the base model is evaluated.
        reuse_embeddings: `corpus_embeddings` of an earlier evaluate task: vectors of the same model,
            prompts and corpus are reused instead of recomputed.
        task_type: Vertex task type; selects the query and document prompts.
        split: Name of the split, used in metric names (`test/base/ndcg@10`).
        margin: The tuned model passes the gate when its NDCG@10 >= base NDCG@10 + margin.
        batch_size: Texts per forward pass.
        hf_token_secret: Secret Manager secret version (`projects/P/secrets/S/versions/V`) holding a Hugging
            Face token, for a gated base model (google/embeddinggemma-300m); read at run time, never logged.

    Returns:
        metrics: `<split>/<base|tuned>/<ndcg|recall|precision>@<1,3,5,10,100>`, `mrr@10`, `map@100`,
            query counts and seconds, and `<split>/tuned_minus_base/ndcg@10`.
        per_query: Parquet, one row per (model, query) with every metric.
        run_files: Folder of TREC run files (`<split>.<model>.trec`, top 100 per query).
        report: HTML report (`….html`): metric table with deltas and a paired significance test, the gate's
            verdict, per-query plots, recall@k curves, and the queries that gained and lost most.
        corpus_embeddings: `<model>.parquet` (`id`, `embedding`) + `<model>.json`, for reuse.
        tuned_is_better: The quality gate: tuned NDCG@10 >= base + margin (False without a tuned model).
        base_ndcg_at_10: Base model NDCG@10.
        tuned_ndcg_at_10: Tuned model NDCG@10 (-1 without a tuned model).
    """
    from collections import namedtuple

    from embedpipe.evaluate import EvaluationOutputs, run_evaluation
    from embedpipe.reports import html_uri, log_metrics

    # A name ending .html opens in a browser (kfp.local's run folder, a downloaded artifact); the new URI
    # reaches executor_output.json, so kfp.local and Vertex record it. The type (system.HTML) stays.
    report.uri = html_uri(report.uri)
    _, comparison, values = run_evaluation(
        corpus.path,
        queries.path,
        labels.path,
        base_model=base_model,
        tuned_model=tuned_model.path if tuned_model is not None else "",
        task_type=task_type,
        split=split,
        margin=margin,
        batch_size=batch_size,
        reuse_embeddings=reuse_embeddings.path if reuse_embeddings is not None else "",
        hf_token_secret=hf_token_secret,
        outputs=EvaluationOutputs(per_query.path, run_files.path, report.path, corpus_embeddings.path),
    )
    log_metrics(metrics, values)
    outputs = namedtuple("EvaluateOutputs", ["tuned_is_better", "base_ndcg_at_10", "tuned_ndcg_at_10"])
    tuned = comparison.tuned if comparison.tuned is not None else -1.0
    return outputs(comparison.tuned_is_better, comparison.base, tuned)
