"""The embedpipe pipeline: prepare the data (tuning, evaluation, embedding and upload join as they land)."""

from kfp import dsl

from embedpipe.components import prepare_data

PIPELINE_NAME = "embedpipe-tune-and-index"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Prepare BEIR-style data, fine-tune an open embedding model, evaluate it and index a corpus.",
)
def tune_and_index(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    test_labels_path: str = "",
    validation_labels_path: str = "",
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    seed: int = 42,
):
    """Prepares the data for tuning and indexing.

    Args:
        corpus_path: `corpus.jsonl` (`_id`, `title`, `text`), local path or `gs://` URI.
        queries_path: `queries.jsonl` (`_id`, `text`).
        train_labels_path: Train labels TSV (`query-id`, `corpus-id`, `score`).
        test_labels_path: Test labels TSV; empty = split off train.
        validation_labels_path: Validation labels TSV; empty = split off train by `validation_fraction`.
        test_fraction: Share of train queries split off as test when no test labels are given.
        validation_fraction: Share of train queries split off as validation (0 = no validation split).
        seed: Seed of the splits.
    """
    prepare_data(
        corpus_path=corpus_path,
        queries_path=queries_path,
        train_labels_path=train_labels_path,
        test_labels_path=test_labels_path,
        validation_labels_path=validation_labels_path,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        seed=seed,
    ).set_display_name("prepare-data")
