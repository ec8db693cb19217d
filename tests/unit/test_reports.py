"""The reports: the significance test, the gain bars, the evaluation and training pages (no model needed)."""

import itertools
import re

import numpy as np
import pandas as pd
import pytest

from embedpipe.evaluate import ModelEvaluation, compare
from embedpipe.metrics import K_VALUES, evaluate_run
from embedpipe.reports import ReportTexts, evaluation_report, html_uri, short_name, training_report
from embedpipe.reports.evaluation import recall_curve
from embedpipe.reports.plots import gain_counts, gain_labels
from embedpipe.reports.stats import EXACT_UP_TO, paired_randomization_test


def brute_force_p(first, second):
    differences = [b - a for a, b in zip(first, second) if abs(b - a) > 1e-12]
    observed = abs(sum(differences))
    patterns = list(itertools.product((1, -1), repeat=len(differences)))
    return sum(abs(sum(s * d for s, d in zip(signs, differences))) >= observed - 1e-9 for signs in patterns) / len(
        patterns
    )


def test_the_paired_test_is_exact_on_few_queries_and_one_without_differences():
    rng = np.random.default_rng(1)
    for n in (1, 5, 12):
        first, second = rng.random(n), rng.random(n)
        assert paired_randomization_test(first, second) == pytest.approx(brute_force_p(first, second))
    assert paired_randomization_test([0.5, 1.0, 0.0], [0.5, 1.0, 0.0]) == 1.0
    # Only differing queries count: 3 of +0.2 among 40 unchanged ones -> 2 of 8 sign patterns.
    assert paired_randomization_test([0.3] * 43, [0.5] * 3 + [0.3] * 40) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="paired values"):
        paired_randomization_test([1.0], [1.0, 2.0])


def test_the_paired_test_resamples_many_queries_reproducibly():
    rng = np.random.default_rng(2)
    first = rng.random(200)
    clear = first + 0.05 + rng.normal(0, 0.05, 200)  # a real gain: as small a p as 10,000 resamples give
    noise = first + rng.normal(0, 0.05, 200)  # no gain: no small p
    assert EXACT_UP_TO < 200
    assert paired_randomization_test(first, clear) == pytest.approx(1 / 10_001)
    p = paired_randomization_test(first, noise)
    assert p > 0.05 and p == paired_randomization_test(first, noise)  # the same seed, the same p
    # Against the exact test's answer, on a case where it is known: 18 differences, half +, half -, same size.
    first, second = [0.0] * 18, [0.1] * 9 + [-0.1] * 9
    assert paired_randomization_test(first, second) == 1.0


def test_unchanged_queries_have_their_own_bar_apart_from_small_gains():
    labels = gain_labels()
    middle = len(labels) // 2
    assert (
        labels[middle] == "unchanged" and labels[middle + 1] == ">0 to +0.05" and labels[middle - 1] == "-0.05 to <0"
    )
    counts = gain_counts([0.0, 1e-12, 0.01, 0.049, 0.05, -0.01, -0.05, 0.3, -1.0, 1.0])
    assert counts[middle] == 2  # exactly 0 and float noise
    assert counts[middle + 1] == 2 and counts[middle + 2] == 1  # 0.05 belongs to the bar farther out
    assert counts[middle - 1] == 1 and counts[middle - 2] == 1
    assert counts[-1] == 1 and counts[0] == 1 and sum(counts) == 10


def test_short_names_are_a_folders_last_part_or_the_reference_given():
    assert short_name("/tmp/pipeline-root/fine-tune/abc/model") == "model"
    assert short_name("gs://bucket/runs/tuned/") == "tuned"
    assert short_name("google/embeddinggemma-300m") == "google/embeddinggemma-300m"
    assert short_name("default") == "default"
    assert html_uri("/x/report") == "/x/report.html" and html_uri("/x/report.html") == "/x/report.html"


# A split of 6 queries and 8 documents. The base model finds q1..q3's document first; the tuned one gains
# on q4 and q5 and loses q1; q6 is the same for both.
QUERIES = pd.DataFrame(
    {"_id": [f"q{i}" for i in range(1, 7)], "text": [f"what about topic {i}?" for i in range(1, 7)]}
)
CORPUS = pd.DataFrame(
    {
        "_id": [f"d{i}" for i in range(1, 9)],
        "title": [f"Title of document {i}" for i in range(1, 8)] + [""],
        "text": [f"text {i}" for i in range(1, 8)] + ["a document without a title, shown by its text"],
    }
)
LABELS = pd.DataFrame(
    {"query-id": [f"q{i}" for i in range(1, 7)], "corpus-id": [f"d{i}" for i in range(1, 7)], "score": [1] * 6}
)


def evaluation(name: str, model: str, rankings: dict[str, list[str]]) -> ModelEvaluation:
    qrels = {q: {d: 1} for q, d in zip(LABELS["query-id"], LABELS["corpus-id"])}
    run = {q: [(d, 1.0 - 0.01 * rank) for rank, d in enumerate(docs)] for q, docs in rankings.items()}
    metrics, per_query = evaluate_run(qrels, {q: dict(docs) for q, docs in run.items()})
    return ModelEvaluation(name, model, metrics, per_query, run, CORPUS["_id"].tolist(), None, seconds=3.0)


BASE = evaluation(
    "base",
    "default",
    {"q1": ["d1", "d8"], "q2": ["d2"], "q3": ["d3"], "q4": ["d8", "d7", "d4"], "q5": ["d8"], "q6": ["d7", "d6"]},
)
TUNED = evaluation(
    "tuned",
    "/very/long/absolute/path/to/the/pipeline/root/fine-tune/tuned-model",
    {"q1": ["d8", "d7", "d1"], "q2": ["d2"], "q3": ["d3"], "q4": ["d4"], "q5": ["d5"], "q6": ["d7", "d6"]},
)


def test_the_comparison_report_has_the_table_plots_and_the_queries_that_gained_and_lost():
    page = evaluation_report("test", [BASE, TUNED], compare(BASE, TUNED), texts=ReportTexts(QUERIES, CORPUS, LABELS))
    # Self-contained: no script, nothing fetched (the SVG namespaces are names, not fetched).
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "@import" not in page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//|url\((?!#)', page)
    # Column headers: the evaluation's name and the folder's last part, the full path only as a tooltip.
    assert "<small>tuned-model</small>" in page and ">/very/long/absolute" not in page
    # The metric table: values, delta, the paired test's p and the better/worse/same counts.
    ndcg = re.search(r"<tr><td>ndcg@10</td>(.*?)</tr>", page, re.S).group(1)
    numbers = re.findall(r">([+-]?[0-9.]+[^<]*)<", ndcg)
    assert numbers[0] == f"{BASE.metrics['ndcg@10']:.4f}" and numbers[1] == f"{TUNED.metrics['ndcg@10']:.4f}"
    assert numbers[2] == f"{TUNED.metrics['ndcg@10'] - BASE.metrics['ndcg@10']:+.4f}"
    assert "2 / 1 / 3" in ndcg  # q4, q5 better; q1 worse; q2, q3, q6 the same
    assert "paired randomization test" in page
    # Three plots with real axes: tick labels and axis labels are text.
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 3
    assert all(">0.0<" in svg or ">0<" in svg for svg in svgs)  # every plot has a tick at 0
    assert ">base ndcg@10<".lower() in svgs[0].lower() and ">unchanged<" in svgs[1] and ">100<" in svgs[2]
    # Gained: q5 (0 -> 1) before q4 (0.5 -> 1), each with its text, its labelled document and both first hits.
    gained = page.split('id="gained"')[1].split('id="lost"')[0]
    assert gained.index("what about topic 5?") < gained.index("what about topic 4?")
    assert "Title of document 5" in gained and "a document without a title, shown by its text" in gained
    assert 'class="rel"' in gained and 'class="notrel"' in gained
    lost = page.split('id="lost"')[1]
    assert "what about topic 1?" in lost and "topic 6" not in lost and "topic 2?" not in lost


def test_a_single_model_report_shows_its_distribution_and_hardest_queries():
    page = evaluation_report("test", [BASE], compare(BASE, None), texts=ReportTexts(QUERIES, CORPUS, LABELS))
    assert "no tuned model given" in page and "Δ" not in page.split("<h2>Plots")[0]
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2 and ">1.0<" in svgs[0]
    hardest = page.split('id="hardest"')[1]
    assert hardest.index("what about topic 5?") < hardest.index("what about topic 4?")  # 0 before 0.5
    # Without texts (a table's evaluation): ids only, and the recall curve from the metric table.
    bare = evaluation_report("test", [BASE], compare(BASE, None))
    assert "<code>q5</code>" in bare and "topic 5" not in bare


def test_the_recall_curve_meets_the_metric_table_at_its_cut_offs():
    qrels = ReportTexts(labels=LABELS).qrels()
    for model in (BASE, TUNED):
        curve = dict(recall_curve(model, qrels))
        assert len(curve) == max(K_VALUES)
        for k in K_VALUES:
            assert curve[k] == pytest.approx(model.metrics[f"recall@{k}"])


def test_the_training_report_draws_the_losses_and_states_the_run():
    metadata = {
        "base_model": "default",
        "task_type": "RETRIEVAL_QUERY",
        "loss": "MultipleNegativesRankingLoss",
        "batch_size": 16,
        "processes": 1,
        "learning_rate": 1e-4,
        "learning_rate_multiplier": 5.0,
        "dimension": 384,
        "base_dimension": 384,
        "loss_curve": [[1, 2.5], [2, 2.1], [3, 1.7], [4, 1.6]],
        "validation_curve": [[2, 2.2], [4, 1.9]],
        "metrics": {
            "train_steps": 4,
            "train_pairs": 64,
            "train_seconds": 12.5,
            "samples_per_second": 5.12,
            "steps_per_second": 0.32,
            "train_loss_first": 2.5,
            "train_loss": 1.6,
            "validation_loss": 1.9,
        },
    }
    page = training_report(metadata)
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    assert ">step<" in svg and ">loss<" in svg and ">validation<" in svg and ">training<" in svg
    for fact in ("16", "0.0001 (multiplier 5)", "12.5 s", "5.1", "2.5000 → 1.6000", "1.9000"):
        assert f"<td>{fact}</td>" in page, fact
    assert "4 logged steps" in page and "2 evaluations" in page
    # A run that logged nothing still renders, saying so.
    assert "No loss was logged" in training_report({"base_model": "default", "metrics": {}})
