"""Library tests of data preparation: good inputs, splits, and a corpus of malformed inputs."""

import json

import pandas as pd
import pytest

from embedpipe.cli import exits
from embedpipe.cli import main as cli_main
from embedpipe.prepare import prepare_data, split_queries
from embedpipe.validation import DataValidationError, Problem

CORPUS = [
    {"_id": "d1", "title": "One", "text": "first document"},
    {"_id": "d2", "title": "Two", "text": "second document"},
    {"_id": "d3", "text": "third document, no title"},
    {"_id": "d4", "title": "Four", "text": "fourth document"},
]
QUERIES = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(1, 6)]
TRAIN = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq3\td3\t1\n"
TEST = "query-id\tcorpus-id\tscore\nq4\td4\t1\nq5\td1\t0\n"


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_dataset(root, corpus=None, queries=None, train=None, test=None):
    """Writes a small BEIR folder; each argument overrides one file's text (str) or bytes."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    files = {
        "corpus": (root / "corpus.jsonl", corpus if corpus is not None else jsonl(CORPUS)),
        "queries": (root / "queries.jsonl", queries if queries is not None else jsonl(QUERIES)),
        "train": (root / "qrels" / "train.tsv", train if train is not None else TRAIN),
        "test": (root / "qrels" / "test.tsv", test if test is not None else TEST),
    }
    paths = {}
    for key, (path, content) in files.items():
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        paths[key] = str(path)
    return paths


def run_prepare(paths, **kwargs):
    return prepare_data(
        paths["corpus"], paths["queries"], paths["train"], test_labels_path=paths.get("test", ""), **kwargs
    )


def test_valid_dataset_is_read_and_counted(tmp_path):
    prepared = run_prepare(write_dataset(tmp_path))
    assert prepared.metrics == {
        "corpus_documents": 4,
        "queries": 5,
        "train_labels": 3,
        "train_queries": 3,
        "validation_labels": 0,
        "validation_queries": 0,
        "test_labels": 2,
        "test_queries": 2,
        "warnings": prepared.metrics["warnings"],
    }
    assert prepared.corpus.loc[2, "title"] == ""
    assert prepared.labels["train"]["score"].tolist() == [1, 2, 1]
    assert any("score 0" in w for w in prepared.warnings)


def test_bom_crlf_numeric_ids_no_header_and_missing_score_are_accepted(tmp_path):
    corpus = ("\ufeff" + jsonl([{"_id": 7, "title": "t", "text": "seven"}, *CORPUS])).replace("\n", "\r\n")
    train = "q1\t7\nq2\td2\t3\r\n"
    prepared = run_prepare(write_dataset(tmp_path, corpus=corpus, train=train))
    assert prepared.corpus["_id"].tolist()[0] == "7"
    assert prepared.labels["train"].values.tolist() == [["q1", "7", 1], ["q2", "d2", 3]]
    assert not prepared.corpus["text"].str.contains("\r").any()


def test_japanese_text_round_trips_unchanged(tmp_path):
    text = "手塚治虫(てづかおさむ、1928年11月3日-1989年2月9日)は、日本の漫画家。"
    corpus = jsonl([{"_id": "ja1", "title": "手塚治虫", "text": text}, *CORPUS])
    paths = write_dataset(tmp_path / "in", corpus=corpus)
    out = tmp_path / "out"
    run_prepare(paths).write(str(out / "c.parquet"), str(out / "q.parquet"), {"train": str(out / "t.parquet")})
    frame = pd.read_parquet(out / "c.parquet")
    assert frame.loc[0, "text"] == text and frame.loc[0, "title"] == "手塚治虫"


def test_missing_test_labels_are_split_off_by_query_deterministically(tmp_path):
    labels = "".join(f"q{i % 5 + 1}\td{i % 4 + 1}\t1\n" for i in range(20))
    paths = write_dataset(tmp_path, train=labels)
    del paths["test"]
    a = run_prepare(paths, test_fraction=0.4, validation_fraction=0.2, seed=3)
    b = run_prepare(paths, test_fraction=0.4, validation_fraction=0.2, seed=3)
    splits = {s: set(a.labels[s]["query-id"]) for s in ("train", "validation", "test")}
    assert len(splits["test"]) == 2 and len(splits["validation"]) == 1 and len(splits["train"]) == 2
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["validation"])
    assert not (splits["test"] & splits["validation"])
    assert sum(len(a.labels[s]) for s in splits) == 20  # every label kept, in exactly one split
    for split in splits:
        pd.testing.assert_frame_equal(a.labels[split], b.labels[split])
    c = run_prepare(paths, test_fraction=0.4, validation_fraction=0.2, seed=4)
    assert any(set(c.labels[s]["query-id"]) != splits[s] for s in splits)


def test_split_queries_ignores_input_order():
    ids = [f"q{i}" for i in range(10)]
    assert split_queries(ids, 0.3, 1) == split_queries(list(reversed(ids)), 0.3, 1)


def test_five_faults_are_all_named_in_one_error(tmp_path):
    corpus = jsonl(CORPUS) + '{"_id": "d5", "text": ""}\n' + '{"_id": "d1", "text": "again"}\n'
    train = TRAIN + "q1\td9\t1\n" + "q2\td2\tmany\n" + "q3 d3 1\n"
    paths = write_dataset(tmp_path, corpus=corpus, train=train)
    with pytest.raises(DataValidationError) as info:
        run_prepare(paths)
    found = {(p.file, p.line, p.field) for p in info.value.problems}
    assert found == {
        (paths["corpus"], 5, "text"),
        (paths["corpus"], 6, "_id"),
        (paths["train"], 5, "corpus-id"),
        (paths["train"], 6, "score"),
        (paths["train"], 7, None),
    }
    assert info.value.total == 5
    assert f"{paths['train']}:6: field 'score': 'many' is not an integer" in str(info.value)


def test_problem_list_is_capped_but_counted(tmp_path):
    corpus = jsonl(CORPUS) + "not json\n" * 30
    with pytest.raises(DataValidationError) as info:
        run_prepare(write_dataset(tmp_path, corpus=corpus), max_problems=10)
    assert len(info.value.problems) == 10 and info.value.total == 30
    assert "and 20 more" in str(info.value)


# Each case: which file to break, its new content, and the (file, line, field, message part) expected.
MALFORMED = {
    "corpus invalid json": ("corpus", jsonl(CORPUS[:1]) + '{"_id": "x", "text": \n', 2, None, "invalid JSON"),
    "corpus missing _id": ("corpus", jsonl(CORPUS) + '{"text": "no id"}\n', 5, "_id", "missing"),
    "corpus empty _id": ("corpus", jsonl(CORPUS) + '{"_id": " ", "text": "t"}\n', 5, "_id", "is empty"),
    "corpus list _id": ("corpus", jsonl(CORPUS) + '{"_id": ["a"], "text": "t"}\n', 5, "_id", "must be a string"),
    "corpus missing text": ("corpus", jsonl(CORPUS) + '{"_id": "d9", "title": "t"}\n', 5, "text", "missing"),
    "corpus empty text": ("corpus", jsonl(CORPUS) + '{"_id": "d9", "text": ""}\n', 5, "text", "is empty"),
    "corpus numeric text": ("corpus", jsonl(CORPUS) + '{"_id": "d9", "text": 12}\n', 5, "text", "must be a string"),
    "corpus numeric title": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "title": 3, "text": "t"}\n',
        5,
        "title",
        "must be a string",
    ),
    "corpus duplicate id": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d2", "text": "t"}\n',
        5,
        "_id",
        "first seen on line 2",
    ),
    "corpus not an object": ("corpus", jsonl(CORPUS) + '["d9", "text"]\n', 5, None, "expected a JSON object"),
    "corpus bad metadata": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": 3}\n',
        5,
        "metadata",
        "JSON object",
    ),
    "corpus latin-1 bytes": (
        "corpus",
        jsonl(CORPUS).encode() + '{"_id": "d9", "text": "caf\xe9"}\n'.encode("latin-1"),
        5,
        None,
        "not valid UTF-8",
    ),
    "corpus empty file": ("corpus", "\n\n", None, None, "has no records"),
    "queries invalid json": ("queries", jsonl(QUERIES) + "{'_id': 'q9'}\n", 6, None, "invalid JSON"),
    "queries duplicate id": (
        "queries",
        jsonl(QUERIES) + '{"_id": "q1", "text": "t"}\n',
        6,
        "_id",
        "duplicate id 'q1'",
    ),
    "queries missing text": ("queries", jsonl(QUERIES) + '{"_id": "q9"}\n', 6, "text", "missing"),
    "labels four columns": ("train", TRAIN + "q1\td2\t1\textra\n", 5, None, "found 4"),
    "labels space separated": ("train", TRAIN + "q1 d2 1\n", 5, None, "tab-separated"),
    "labels fractional score": ("train", TRAIN + "q1\td2\t1.5\n", 5, "score", "not an integer"),
    "labels negative score": ("train", TRAIN + "q1\td2\t-1\n", 5, "score", "negative score -1"),
    "labels unknown query": ("train", TRAIN + "q99\td2\t1\n", 5, "query-id", "unknown query id 'q99'"),
    "labels unknown document": ("train", TRAIN + "q1\td99\t1\n", 5, "corpus-id", "unknown corpus id 'd99'"),
    "labels empty query id": ("train", TRAIN + "\td2\t1\n", 5, "query-id", "is empty"),
    "labels duplicate pair": ("train", TRAIN + "q1\td1\t2\n", 5, "corpus-id", "first on line 2"),
    "labels latin-1 bytes": ("train", TRAIN.encode() + b"q1\td\xe9\t1\n", 5, None, "not valid UTF-8"),
    "query in two splits": ("test", TEST + "q2\td4\t1\n", 4, "query-id", "one split only"),
    "labels empty file": ("train", "query-id\tcorpus-id\tscore\n", None, None, "has no labels"),
}

# What the outputs cannot store (issue 16): each is a problem on its line and field, never a traceback.
DEEP = "[" * 100_000 + "]" * 100_000
MALFORMED |= {
    "corpus NaN in metadata": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"score": NaN}}\n',
        5,
        "metadata.score",
        "NaN is not a JSON number",
    ),
    "corpus -Infinity in a metadata list": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"a b": [1, -Infinity]}}\n',
        5,
        'metadata["a b"][1]',
        "-Infinity is not a JSON number",
    ),
    "corpus float overflow": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"x": 1e400}}\n',
        5,
        "metadata.x",
        "out of the range of a 64-bit float",
    ),
    "corpus 5000-digit integer": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"n": ' + "7" * 5000 + "}}\n",
        5,
        "metadata.n",
        "a number of 5,000 characters",
    ),
    "corpus 5000-digit numeric _id": (
        "corpus",
        jsonl(CORPUS) + '{"_id": ' + "7" * 5000 + ', "text": "t"}\n',
        5,
        "_id",
        "a number of 5,000 characters",
    ),
    "corpus NUL in text": ("corpus", jsonl(CORPUS) + '{"_id": "d9", "text": "a\\u0000b"}\n', 5, "text", "NUL"),
    "corpus NUL in title": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "title": "\\u0000", "text": "t"}\n',
        5,
        "title",
        "NUL character (\\u0000) at character 1",
    ),
    "corpus NUL in _id": ("corpus", jsonl(CORPUS) + '{"_id": "d\\u00009", "text": "t"}\n', 5, "_id", "NUL"),
    "corpus NUL in a metadata key": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"k": {"a\\u0000": 1}}}\n',
        5,
        "metadata.k",
        'key "a\\u0000" contains a NUL',
    ),
    "corpus NUL in a metadata value": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"k": ["ok", "\\u0000"]}}\n',
        5,
        "metadata.k[1]",
        "NUL",
    ),
    "corpus lone surrogate": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "x\\ud800"}\n',
        5,
        "text",
        "lone surrogate (\\ud800) at character 2",
    ),
    "corpus deep nesting": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": {"x": ' + DEEP + "}}\n",
        5,
        None,
        "nested 100,002 levels deep",
    ),
    "corpus nesting past the limit": (
        "corpus",
        jsonl(CORPUS) + '{"_id": "d9", "text": "t", "metadata": ' + "[" * 64 + "]" * 64 + "}\n",
        5,
        None,
        "nested 65 levels deep; at most 64",
    ),
    "corpus _id an object with NaN": (
        "corpus",
        jsonl(CORPUS) + '{"_id": {"n": [NaN]}, "text": "t"}\n',
        5,
        "_id",
        'must be a string, got dict {"n": ["NaN"]}',
    ),
    "corpus _id with whitespace": (
        "corpus",
        jsonl(CORPUS) + '{"_id": " d9", "text": "t"}\n',
        5,
        "_id",
        "' d9' has surrounding whitespace",
    ),
    "queries _id with whitespace": (
        "queries",
        jsonl(QUERIES) + '{"_id": "q9\\t", "text": "t"}\n',
        6,
        "_id",
        "surrounding whitespace",
    ),
    "queries NUL in text": ("queries", jsonl(QUERIES) + '{"_id": "q9", "text": "\\u0000"}\n', 6, "text", "NUL"),
    "queries Infinity in metadata": (
        "queries",
        jsonl(QUERIES) + '{"_id": "q9", "text": "t", "metadata": {"w": Infinity}}\n',
        6,
        "metadata.w",
        "Infinity",
    ),
    "labels query id with whitespace": ("train", TRAIN + "q1 \td2\t1\n", 5, "query-id", "'q1 ' has surrounding"),
    "labels corpus id with whitespace": ("train", TRAIN + "q1\t d2\t1\n", 5, "corpus-id", "surrounding whitespace"),
    "labels NUL in an id": ("train", TRAIN + "q1\td\x002\t1\n", 5, "corpus-id", "NUL character"),
    "labels score past int64": ("train", TRAIN + f"q1\td2\t{2**63}\n", 5, "score", "larger than a 64-bit integer"),
    "labels score 10^30": ("train", TRAIN + f"q1\td2\t{10**30}\n", 5, "score", "larger than a 64-bit integer"),
    "labels 5000-digit score": ("train", TRAIN + "q1\td2\t" + "9" * 5000 + "\n", 5, "score", "(5,000 characters)"),
    "labels 5000-digit negative score": ("train", TRAIN + "q1\td2\t-" + "9" * 5000 + "\n", 5, "score", "negative"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_names_file_line_and_field_and_writes_nothing(tmp_path, case, capsys):
    key, content, line, field, message = MALFORMED[case]
    paths = write_dataset(tmp_path / "data", **{key: content})
    with pytest.raises(DataValidationError) as info:
        run_prepare(paths)
    matching = [p for p in info.value.problems if (p.file, p.line, p.field) == (paths[key], line, field)]
    assert matching, f"expected a problem at {paths[key]}:{line} field {field}, got {info.value.problems}"
    assert message in matching[0].message
    assert str(matching[0]) in str(info.value)

    out = tmp_path / "out"
    argv = ["prepare", "--data", str(tmp_path / "data"), "--output-dir", str(out)]
    assert cli_main(argv) == exits.BAD_INPUT
    assert str(matching[0]) in capsys.readouterr().err
    assert not out.exists(), "nothing may be written when the input has problems"


def test_too_few_queries_to_split_names_the_train_file(tmp_path):
    paths = write_dataset(tmp_path, train="q1\td1\t1\n")
    del paths["test"]
    with pytest.raises(DataValidationError) as info:
        run_prepare(paths, test_fraction=0.2)
    assert info.value.problems == [info.value.problems[0]]
    problem = info.value.problems[0]
    assert (problem.file, problem.line, problem.field) == (paths["train"], None, None)
    assert "too few queries to split off a test set" in problem.message


def test_problem_string_form():
    assert str(Problem("a.tsv", 3, "score", "bad")) == "a.tsv:3: field 'score': bad"
    assert str(Problem("a.tsv", None, None, "empty")) == "a.tsv: empty"


def test_failed_rewrite_keeps_the_previous_output(tmp_path):
    """Outputs are replaced atomically: a failing write leaves the last good file in place."""
    from embedpipe import storage

    target = tmp_path / "out.txt"
    storage.write_text_atomic(target, "good")
    with pytest.raises(RuntimeError):
        with storage.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_values_at_the_limits_are_kept_and_round_trip(tmp_path):
    metadata = {
        "big": 2**70,
        "pi": 3.25,
        "deep": json.loads("[" * 60 + "]" * 60),
        "brackets in a string": "[" * 500,
        "emoji": "\U0001f600",  # json.dumps writes it as the escaped pair \ud83d\ude00
        "key with spaces": None,
    }
    # "\ud83d\ude00" as an escaped surrogate pair is one valid character, not a lone surrogate.
    line = '{"_id": "d9", "text": "pair: \\ud83d\\ude00", "metadata": ' + json.dumps(metadata) + "}\n"
    paths = write_dataset(tmp_path / "data", corpus=jsonl(CORPUS) + line, train=TRAIN + f"q1\td9\t{2**63 - 1}\n")
    prepared = run_prepare(paths)
    prepared.write(str(tmp_path / "c.parquet"), str(tmp_path / "q.parquet"), {"train": str(tmp_path / "t.parquet")})
    corpus = pd.read_parquet(tmp_path / "c.parquet").set_index("_id")
    assert corpus.loc["d9", "text"] == "pair: \U0001f600"
    assert json.loads(corpus.loc["d9", "metadata"]) == metadata
    train = pd.read_parquet(tmp_path / "t.parquet")
    assert train["score"].max() == 2**63 - 1 and str(train["score"].dtype) == "int64"


def test_every_unstorable_line_is_reported_and_a_field_counts_the_rest(tmp_path):
    bad = [
        '{"_id": "d5", "text": "\\u0000"}',
        '{"_id": "d6 ", "text": "t"}',
        '{"_id": "d7", "text": "t", "metadata": {"a": [NaN, NaN, Infinity], "b": "\\ud800"}}',
    ]
    paths = write_dataset(tmp_path, corpus=jsonl(CORPUS) + "\n".join(bad) + "\n")
    with pytest.raises(DataValidationError) as info:
        run_prepare(paths)
    found = [(p.line, p.field) for p in info.value.problems if p.file == paths["corpus"]]
    assert found == [(5, "text"), (6, "_id"), (7, "metadata.a[0]")]
    assert "(and 3 more such values in 'metadata')" in info.value.problems[2].message


def test_labels_no_longer_strip_ids_so_a_padded_id_is_named(tmp_path):
    """Changed by issue 16: ' q1' used to be stripped silently; ids are now matched exactly everywhere."""
    paths = write_dataset(tmp_path, train=TRAIN + " q1\td2\t1\n")
    with pytest.raises(DataValidationError) as info:
        run_prepare(paths)
    assert f"{paths['train']}:5: field 'query-id': ' q1' has surrounding whitespace" in str(info.value)
