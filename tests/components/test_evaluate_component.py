"""Component tier: evaluate's Python function on a small slice of the example data."""

import shutil

import pandas as pd
import pytest
import pytrec_eval
from kfp import dsl

from embedpipe.components import evaluate
from embedpipe.evaluate import load_embeddings
from embedpipe.models import packaged_model_path
from embedpipe.prepare import prepare_data
from tests.conftest import EXAMPLE_DATA


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    """5 test queries, their documents and 10 others (texts cut to 40 words: this tests the plumbing, and
    encoding full abstracts on a shared 2-core machine is slow), as prepare_data's Parquet files."""
    root = tmp_path_factory.mktemp("split")
    prepared = prepare_data(
        str(EXAMPLE_DATA / "corpus.jsonl"),
        str(EXAMPLE_DATA / "queries.jsonl"),
        str(EXAMPLE_DATA / "qrels" / "train.tsv"),
        test_labels_path=str(EXAMPLE_DATA / "qrels" / "test.tsv"),
    )
    labels = prepared.labels["test"]
    labels = labels[labels["query-id"].isin(labels["query-id"].unique()[:5])]
    keep = set(labels["corpus-id"]) | set(prepared.corpus["_id"].head(10))
    corpus = prepared.corpus[prepared.corpus["_id"].isin(keep)]
    corpus = corpus.assign(text=corpus["text"].str.split().str[:40].str.join(" "))
    paths = {}
    for name, frame in (
        ("corpus", corpus),
        ("queries", prepared.queries),
        ("labels", labels),
    ):
        paths[name] = str(root / f"{name}.parquet")
        frame.to_parquet(paths[name], index=False)
    return paths


def outputs(tmp_path):
    return dict(
        metrics=dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics")),
        per_query=dsl.Dataset(name="per_query", uri=str(tmp_path / "per_query")),
        run_files=dsl.Dataset(name="run_files", uri=str(tmp_path / "run_files")),
        report=dsl.HTML(name="report", uri=str(tmp_path / "report")),
        corpus_embeddings=dsl.Dataset(name="corpus_embeddings", uri=str(tmp_path / "corpus_embeddings")),
    )


def inputs(paths):
    return dict(
        corpus=dsl.Dataset(name="corpus", uri=paths["corpus"]),
        queries=dsl.Dataset(name="queries", uri=paths["queries"]),
        labels=dsl.Dataset(name="labels", uri=paths["labels"]),
    )


def test_base_and_tuned_are_scored_and_the_gate_decided(tmp_path, small_split):
    tuned_folder = tmp_path / "tuned"
    shutil.copytree(packaged_model_path(), tuned_folder)  # same weights: tuned == base
    out = outputs(tmp_path / "a")
    result = evaluate.python_func(
        **inputs(small_split), **out, tuned_model=dsl.Model(name="model", uri=str(tuned_folder)), margin=0.0
    )
    metrics = out["metrics"].metadata
    assert metrics["test/base/queries"] == metrics["test/tuned/queries"] == 5
    assert metrics["test/base/ndcg@10"] == pytest.approx(metrics["test/tuned/ndcg@10"], abs=1e-6)
    assert 0 < metrics["test/base/ndcg@10"] <= 1
    assert result.tuned_is_better is True and result.base_ndcg_at_10 == pytest.approx(result.tuned_ndcg_at_10)

    table = pd.read_parquet(out["per_query"].path)
    assert sorted(table["model"].unique()) == ["base", "tuned"] and len(table) == 10
    run_lines = (tmp_path / "a" / "run_files" / "test.base.trec").read_text().splitlines()
    assert run_lines[0].split()[1:4:2] == ["Q0", "1"]
    # The run file, scored by trec_eval itself, gives the per-query numbers of the table.
    run, qrels = {}, {}
    for line in run_lines:
        query_id, _, doc_id, _, score, _ = line.split()
        run.setdefault(query_id, {})[doc_id] = float(score)
    labels = pd.read_parquet(small_split["labels"])
    for query_id, doc_id, score in labels[["query-id", "corpus-id", "score"]].itertuples(index=False):
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    for row in table[table["model"] == "base"].to_dict("records"):
        assert row["ndcg@10"] == pytest.approx(reference[row["query-id"]]["ndcg_cut_10"], abs=1e-6)
        assert row["recall@100"] == pytest.approx(reference[row["query-id"]]["recall_100"], abs=1e-6)
    report = open(out["report"].path, encoding="utf-8").read()
    assert evaluate.component_spec.outputs["report"].type == "system.HTML@0.0.1"  # the Vertex console shows it
    assert report.startswith("<!DOCTYPE html>") and "<svg" in report and "the gate" in report
    # Named .html (the URI the executor output records); the tuned model is headed by its folder's name.
    assert out["report"].uri == str(tmp_path / "a" / "report.html") and out["report"].path.endswith(".html")
    assert "<small>tuned</small>" in report and f">{tuned_folder}<" not in report
    cached = load_embeddings(out["corpus_embeddings"].path, "tuned")
    assert cached.corpus_embeddings.shape == (len(pd.read_parquet(small_split["corpus"])), 384)

    # A stricter margin fails the gate; the cached corpus vectors of both models are reused.
    out2 = outputs(tmp_path / "b")
    result2 = evaluate.python_func(
        **inputs(small_split),
        **out2,
        tuned_model=dsl.Model(name="model", uri=str(tuned_folder)),
        reuse_embeddings=dsl.Dataset(name="corpus_embeddings", uri=out["corpus_embeddings"].path),
        margin=0.01,
    )
    assert result2.tuned_is_better is False
    assert out2["metrics"].metadata["test/base/ndcg@10"] == metrics["test/base/ndcg@10"]
    assert "cached corpus vectors" in open(out2["report"].path, encoding="utf-8").read()


def test_base_only_has_no_gate(tmp_path, small_split):
    out = outputs(tmp_path)
    result = evaluate.python_func(**inputs(small_split), **out)
    assert result.tuned_is_better is False and result.tuned_ndcg_at_10 == -1.0
    assert not any(name.startswith("test/tuned") for name in out["metrics"].metadata)


def test_labels_without_a_relevant_pair_are_refused(tmp_path, small_split):
    labels = pd.read_parquet(small_split["labels"]).assign(score=0)
    path = tmp_path / "zero.parquet"
    labels.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="no relevant"):
        evaluate.python_func(
            **{**inputs(small_split), "labels": dsl.Dataset(name="labels", uri=str(path))}, **outputs(tmp_path)
        )
