"""prepare_data: validate BEIR-style inputs, split labels by query, write Parquet datasets."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Metrics, Output

from embedpipe.images import BASE_IMAGE

# Our image already has kfp and embedpipe installed: nothing is pip-installed when the task starts.


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def prepare_data(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    corpus: Output[Dataset],
    queries: Output[Dataset],
    train_labels: Output[Dataset],
    validation_labels: Output[Dataset],
    test_labels: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    test_labels_path: str = "",
    validation_labels_path: str = "",
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    seed: int = 42,
    base_model: str = "",
):
    """Validates BEIR-style corpus, queries and labels, and writes them as Parquet datasets.

    Every problem in the input is reported at once (file, line, field) before anything is written.

    Args:
        corpus_path: `corpus.jsonl` (`_id`, `text`, optional `title`), local path or `gs://` URI.
        queries_path: `queries.jsonl` (`_id`, `text`).
        train_labels_path: Train labels TSV (`query-id`, `corpus-id`, `score`; header optional).
        test_labels_path: Test labels TSV; empty = split `test_fraction` of the train queries off.
        validation_labels_path: Validation labels TSV; empty = split `validation_fraction` off (0 = none).
        test_fraction: Share of train queries moved to test when no test labels are given.
        validation_fraction: Share of train queries moved to validation when none are given.
        seed: Seed of the query split.
        base_model: The run's base model, checked first so that a Vertex AI model id
            (`textembedding-gecko@003`, ...) is answered, with its open replacement, before any work
            ("" = not checked).

    Returns:
        corpus: Parquet, columns `_id`, `title`, `text`, `metadata`.
        queries: Parquet, columns `_id`, `text`, `metadata`.
        train_labels: Parquet, columns `query-id`, `corpus-id`, `score`.
        validation_labels: Same columns (may be empty).
        test_labels: Same columns.
        metrics: Counts of documents, queries and labels per split.
        report: Markdown report: counts, length distributions, warnings.
    """
    from embedpipe.models import check_open_model
    from embedpipe.prepare import prepare_data as prepare
    from embedpipe.reports import log_metrics

    check_open_model(base_model)
    prepared = prepare(
        corpus_path,
        queries_path,
        train_labels_path,
        test_labels_path,
        validation_labels_path,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    prepared.write(
        corpus.path,
        queries.path,
        {"train": train_labels.path, "validation": validation_labels.path, "test": test_labels.path},
        report.path,
    )
    log_metrics(metrics, prepared.metrics)
