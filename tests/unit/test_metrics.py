"""Our retrieval metrics against trec_eval's (pytrec_eval), and chunked exact search against brute force."""

import random

import numpy as np
import pytest
import pytrec_eval

from embedpipe.metrics import K_VALUES, evaluate_run, query_metrics, rank_documents
from embedpipe.retrieval import top_k


def random_case(seed, queries=150, docs=80):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(queries):
        judged = rng.sample(range(docs), rng.randint(1, 8))
        qrels[f"q{q}"] = {f"d{d}": rng.choice([0, 1, 1, 2, 3]) for d in judged}
        # Scores rounded to one decimal: many ties, which trec_eval breaks by document id.
        run[f"q{q}"] = {f"d{d}": round(rng.random(), 1) for d in rng.sample(range(docs), rng.randint(0, 60))}
    return qrels, run


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_equals_trec_eval_with_graded_labels_and_ties(seed):
    qrels, run = random_case(seed)
    cuts = ",".join(map(str, K_VALUES))
    reference = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut.{cuts}", f"recall.{cuts}", f"P.{cuts}", "map_cut.100"}
    ).evaluate(run)
    top10 = {q: {d: docs[d] for d in rank_documents(docs)[:10]} for q, docs in run.items()}
    reference_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)

    means, per_query = evaluate_run(qrels, run)
    assert per_query, "the case must evaluate some queries"
    for query_id, ours in per_query.items():
        theirs = reference[query_id]
        for k in K_VALUES:
            assert ours[f"ndcg@{k}"] == pytest.approx(theirs[f"ndcg_cut_{k}"], abs=1e-6)
            assert ours[f"recall@{k}"] == pytest.approx(theirs[f"recall_{k}"], abs=1e-6)
            assert ours[f"precision@{k}"] == pytest.approx(theirs[f"P_{k}"], abs=1e-6)
        assert ours["map@100"] == pytest.approx(theirs["map_cut_100"], abs=1e-6)
        assert ours["mrr@10"] == pytest.approx(reference_rr[query_id]["recip_rank"], abs=1e-6)
    assert means["ndcg@10"] == pytest.approx(np.mean([reference[q]["ndcg_cut_10"] for q in per_query]), abs=1e-6)


def test_queries_without_a_relevant_label_are_skipped():
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 0, "d2": 0}}
    run = {"q1": {"d1": 0.5}, "q2": {"d1": 0.9}}
    means, per_query = evaluate_run(qrels, run)
    assert list(per_query) == ["q1"] and means["ndcg@10"] == 1.0
    assert query_metrics(qrels["q2"], run["q2"]) is None


def test_ties_are_broken_by_document_id_descending_as_trec_eval_does():
    assert rank_documents({"a": 0.5, "c": 0.5, "b": 0.9}) == ["b", "c", "a"]
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 0.5, "c": 0.5}}
    ours = evaluate_run(qrels, run)[1]["q"]["ndcg@1"]
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1"}).evaluate(run)["q"]["ndcg_cut_1"]
    assert ours == theirs == 0.0


def test_chunked_search_equals_brute_force():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1037, 16)).astype(np.float32)
    queries = rng.standard_normal((53, 16)).astype(np.float32)
    scores, indices = top_k(queries, corpus, 10, query_chunk=7, corpus_chunk=100)
    full = queries @ corpus.T
    want = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(indices, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-5)


def test_k_larger_than_the_corpus_returns_every_document():
    corpus = np.eye(3, dtype=np.float32)
    scores, indices = top_k(corpus, corpus, 100)
    assert indices.shape == (3, 3) and indices[:, 0].tolist() == [0, 1, 2]


def test_docstring_examples_hold():
    import doctest

    import embedpipe.metrics
    import embedpipe.retrieval

    for module in (embedpipe.metrics, embedpipe.retrieval):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__
