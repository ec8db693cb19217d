"""Vertex AI's documented dataset size requirements for tuning, at `prepare_data`.

Vertex (https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-embeddings, "Dataset size
requirements"): 9 to 10,000 queries; 9 to 500,000 corpus documents; at least 3 query ids in each label file
and 9 across all splits; fewer than 500,000 labels. None is a limit of embedpipe's (the tests' tiny datasets
are below the minimums), so each is a warning naming the file, the field and the requirement, and an error
only with `vertex_limits="error"`.
"""

import json

import pytest

from embedpipe.beir import Label
from embedpipe.cli import exits
from embedpipe.cli import main as cli_main
from embedpipe.prepare import prepare_data, vertex_limit_problems
from embedpipe.validation import DataValidationError
from embedpipe.vertex import DATASET_LIMITS


def write(root, documents: int, queries: int, train: list[str], test: list[str]) -> dict:
    """A BEIR folder: query qN is labelled with document dN."""
    (root / "qrels").mkdir(parents=True)
    corpus = "".join(json.dumps({"_id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(documents))
    (root / "corpus.jsonl").write_text(corpus)
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"q {i}"}) + "\n" for i in range(queries))
    )
    for name, ids in (("train", train), ("test", test)):
        (root / "qrels" / f"{name}.tsv").write_text("".join(f"{q}\td{q[1:]}\t1\n" for q in ids))
    return {
        "corpus_path": str(root / "corpus.jsonl"),
        "queries_path": str(root / "queries.jsonl"),
        "train_labels_path": str(root / "qrels" / "train.tsv"),
        "test_labels_path": str(root / "qrels" / "test.tsv"),
    }


def vertex_warnings(prepared) -> list[str]:
    return [w for w in prepared.warnings if "Vertex AI's tuning requires" in w]


def test_the_limits_are_vertexs_documented_ones():
    assert (DATASET_LIMITS.min_queries, DATASET_LIMITS.max_queries) == (9, 10_000)
    assert (DATASET_LIMITS.min_documents, DATASET_LIMITS.max_documents) == (9, 500_000)
    assert (DATASET_LIMITS.min_queries_per_label_file, DATASET_LIMITS.min_labelled_queries) == (3, 9)
    assert DATASET_LIMITS.max_labels == 499_999


def test_a_dataset_within_the_limits_gets_no_vertex_warning(tmp_path, example_data):
    paths = write(tmp_path, 9, 9, [f"q{i}" for i in range(6)], ["q6", "q7", "q8"])
    assert vertex_warnings(prepare_data(**paths)) == []
    scifact = prepare_data(
        str(example_data / "corpus.jsonl"),
        str(example_data / "queries.jsonl"),
        str(example_data / "qrels" / "train.tsv"),
        str(example_data / "qrels" / "test.tsv"),
    )
    assert vertex_warnings(scifact) == []


def test_below_vertexs_minimums_is_prepared_with_warnings_naming_file_and_field(tmp_path):
    paths = write(tmp_path, 5, 6, ["q0", "q1", "q2"], ["q3", "q4"])
    prepared = prepare_data(**paths)
    assert prepared.metrics["corpus_documents"] == 5  # prepared all the same
    found = vertex_warnings(prepared)
    assert len(found) == 4, found
    queries, corpus, test, across = found
    assert (
        queries.startswith(f"{paths['queries_path']}: field '_id': 6 queries; ") and "9 to 10,000 queries" in queries
    )
    assert corpus.startswith(f"{paths['corpus_path']}: field '_id': 5 documents; ") and "9 to 500,000" in corpus
    assert test.startswith(f"{paths['test_labels_path']}: field 'query-id': 2 query ids in the test labels")
    assert "at least 3 query ids in each label file" in test
    assert across.startswith(f"{paths['train_labels_path']}: field 'query-id': 5 query ids across")
    assert all(w.endswith("(embedpipe goes on: not a limit here)") for w in found)
    assert all("https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-embeddings" in w for w in found)


def test_a_split_off_split_is_named_by_how_it_was_made(tmp_path):
    paths = write(tmp_path, 12, 12, [f"q{i}" for i in range(10)], [])
    paths["test_labels_path"] = ""
    prepared = prepare_data(**paths, test_fraction=0.2)
    (test,) = vertex_warnings(prepared)
    assert test.startswith("test split (20% of train queries, seed 42): field 'query-id': 2 query ids")


def test_vertex_limits_error_makes_them_problems_and_writes_nothing(tmp_path, capsys):
    paths = write(tmp_path / "data", 5, 6, ["q0", "q1", "q2"], ["q3", "q4"])
    with pytest.raises(DataValidationError) as info:
        prepare_data(**paths, vertex_limits="error")
    assert info.value.total == 4
    assert "2 query ids in the test labels" in str(info.value)

    out = tmp_path / "out"
    argv = ["prepare", "--data", str(tmp_path / "data"), "--output-dir", str(out), "--vertex-limits", "error"]
    assert cli_main(argv) == exits.BAD_INPUT
    assert "4 problem(s) found in the input data; nothing was written" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="vertex_limits must be one of warn, error"):
        prepare_data(**paths, vertex_limits="strict")


def test_upper_limits(tmp_path):
    files = {"corpus": "c.jsonl", "queries": "q.jsonl", "train": "t.tsv", "validation": "v", "test": "s"}
    labels = {"train": [Label(f"q{i % 9}", "d", 1, i) for i in range(500_000)]}
    found = vertex_limit_problems(500_001, 10_001, labels, files)
    assert [(p.file, p.field) for p in found] == [("q.jsonl", "_id"), ("c.jsonl", "_id"), ("t.tsv", None)]
    assert "fewer than 500,000 labels in all" in found[-1].message
