"""embed_corpus reuses the corpus vectors evaluate computed (the full pipeline's embed step)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp import dsl

from embedpipe.components import embed_corpus
from embedpipe.evaluate import EvaluationOutputs, run_evaluation
from embedpipe.models import packaged_model_path
from embedpipe.prepare import SPLITS, prepare_data

pytestmark = pytest.mark.slow


def artifact(cls, path):
    return cls(name=Path(str(path)).name, uri=str(path))


def evaluate_tiny(data: Path, out: Path) -> Path:
    prepared = prepare_data(
        corpus_path=str(data / "corpus.jsonl"),
        queries_path=str(data / "queries.jsonl"),
        train_labels_path=str(data / "qrels" / "train.tsv"),
        test_labels_path=str(data / "qrels" / "test.tsv"),
    )
    prepared.write(
        str(out / "corpus.parquet"), str(out / "queries.parquet"), {s: str(out / f"{s}.parquet") for s in SPLITS}
    )
    run_evaluation(
        str(out / "corpus.parquet"),
        str(out / "queries.parquet"),
        str(out / "test.parquet"),
        base_model="default",
        tuned_model=str(packaged_model_path()),
        outputs=EvaluationOutputs(corpus_embeddings=str(out / "corpus_embeddings")),
    )
    return out


def embed(tmp_path, name, corpus, **kwargs):
    vectors, metrics = artifact(dsl.Dataset, tmp_path / name), artifact(dsl.Metrics, tmp_path / f"{name}-metrics")
    embed_corpus.python_func(
        corpus=artifact(dsl.Dataset, corpus),
        vectors=vectors,
        metrics=metrics,
        gcp_resources=str(tmp_path / f"{name}-gcp"),
        tuned_model=artifact(dsl.Model, packaged_model_path()),
        task_type="RETRIEVAL_QUERY",
        **kwargs,
    )
    return pd.read_parquet(vectors.path).set_index("id").sort_index(), metrics.metadata


def test_vectors_evaluation_computed_are_reused_and_equal_a_fresh_embedding(tmp_path, tiny_example_data):
    out = evaluate_tiny(tiny_example_data, tmp_path / "eval")
    corpus, evaluation = out / "corpus.parquet", artifact(dsl.Dataset, out / "corpus_embeddings")
    reused, metrics = embed(tmp_path, "reused", corpus, evaluation_embeddings=evaluation)
    assert metrics["documents_reused"] == 14 and metrics["documents_embedded"] == 0
    fresh, fresh_metrics = embed(tmp_path, "fresh", corpus)
    assert fresh_metrics["documents_embedded"] == 14
    assert list(reused.index) == list(fresh.index)
    a, b = np.stack(reused["embedding"]), np.stack(fresh["embedding"])
    assert (np.sum(a * b, axis=1) > 0.9999).all()
    assert list(reused["content"]) == list(fresh["content"]) and list(reused["metadata"]) == list(fresh["metadata"])
    assert list(reused["content_hash"]) == list(fresh["content_hash"])


def test_nothing_is_reused_when_chunking(tmp_path, tiny_example_data):
    out = evaluate_tiny(tiny_example_data, tmp_path / "eval")
    _, metrics = embed(
        tmp_path,
        "chunked",
        out / "corpus.parquet",
        evaluation_embeddings=artifact(dsl.Dataset, out / "corpus_embeddings"),
        chunk_tokens=16,
        chunk_overlap=4,
    )
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14


def test_a_larger_corpus_reuses_the_overlap_and_embeds_the_rest(tmp_path, tiny_example_data):
    out = evaluate_tiny(tiny_example_data, tmp_path / "eval")
    lines = (tiny_example_data / "corpus.jsonl").read_text().splitlines()
    extra = [json.dumps({"_id": f"extra-{i}", "title": "", "text": f"an extra document number {i}"}) for i in range(3)]
    larger = tmp_path / "larger.jsonl"
    larger.write_text("\n".join(lines + extra) + "\n")
    table, metrics = embed(
        tmp_path, "larger", larger, evaluation_embeddings=artifact(dsl.Dataset, out / "corpus_embeddings")
    )
    assert metrics["documents_reused"] == 14 and metrics["documents_embedded"] == 3 and len(table) == 17
