"""`prepare_data` on generated corpus, queries and labels: a clear input error, or output that round-trips.

A dataset is clean, has one faulty line, or many; a faulty line has one fault: random JSON values, NaN and
Infinity, NUL characters, lone surrogates (escaped, and raw as invalid UTF-8), ids with surrounding
whitespace, huge and over-long numbers, deep nesting, invalid UTF-8 bytes, wrong types, missing fields,
broken TSV cells and scores.

Property: `prepare_data` either raises `DataValidationError` whose every problem names its file (and line,
when it is about a line) and which reports every line that must be rejected, or returns data that `write`
stores as Parquet equal to what a plain reading of the input gives, with no NUL, lone surrogate, non-finite
number or over-deep nesting in it. Nothing else may be raised.
"""

import json
import math

import pyarrow.parquet as pq
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from embedpipe.prepare import prepare_data
from embedpipe.validation import DataValidationError

MISSING = object()
ODD_CHARS = ["\x00", "\ud800", "\udfff", " ", "\t", "\u00a0", "\u2028", "é", "\U0001f600", '"', "\\", "[", "{", "a"]
plain = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)
odd = st.text(st.sampled_from(ODD_CHARS), min_size=1, max_size=6)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | plain | odd
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain | odd, inner, max_size=3), max_leaves=8
)
# What a valid record holds: finite numbers, strings without NUL or lone surrogates, shallow nesting.
clean_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | plain,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain, inner, max_size=3),
    max_leaves=8,
)
LITERAL = "@@literal@@"  # replaced in the JSON text by a number that json.dumps cannot write
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "7" * 101, "-" + "9" * 5000, "1" * 100, "1e-400", "-0"]
STORABLE_NUMBERS = {"_id": {"1" * 100, "-0"}, "metadata": {"1" * 100, "1e-400", "-0"}}
DEPTHS = [2, 61, 62, 63, 1000, 100_000]  # inside {"metadata": {"x": ...}}: 2 levels more; 64 levels are allowed
PADS = [" ", "\t", "\u00a0", "\u2028", "\u3000"]
# Faults of a line; a faulty line has exactly one.
# (Hypothesis draws the first choices of a list more often: the faults that need exact checks come first.)
LINE_FAULTS = ["number", "deep", "nul", "surrogate", "padded id", "missing", "wrong type", "not an object", "bytes"]
LABEL_FAULTS = ["score", "nul", "padded id", "unknown id", "columns", "bytes"]
no_newline = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\n", b"n"))  # keeps line numbers


def insert(value: str, char: str, at: int) -> str:
    at %= len(value) + 1
    return value[:at] + char + value[at:]


def jsonl_line(draw, record_id: str, fault: str | None) -> tuple[bytes, bool | None]:
    """A corpus or queries line, and whether it must be rejected (None: it may or may not be)."""
    record: dict = {"_id": record_id, "text": draw(plain)}
    if draw(st.booleans()):
        record["title"] = draw(plain)
    if draw(st.booleans()):
        record["metadata"] = draw(st.none() | st.dictionaries(plain, clean_values, max_size=4))
    ascii_only, literal, reject = draw(st.booleans()), None, fault is not None
    if fault in ("nul", "surrogate"):
        char = "\x00" if fault == "nul" else draw(st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]))
        where = draw(st.sampled_from(["_id", "text", "title", "metadata value", "metadata key"]))
        bad = insert(draw(plain), char, draw(st.integers(0, 8)))
        if where.startswith("metadata"):
            inner = {bad: 1} if where == "metadata key" else bad
            record["metadata"] = draw(st.sampled_from([{"k": inner}, {"k": [1, {"x": inner}]}]))
        else:
            record[where] = bad
        # A queries file has no titles: one is dropped unread, unless it is not even UTF-8.
        reject = not (record_id.startswith("q") and where == "title" and (fault == "nul" or ascii_only))
    elif fault == "padded id":
        pad = draw(st.sampled_from(PADS))
        record["_id"] = draw(st.sampled_from([pad + record_id, record_id + pad, pad]))
    elif fault == "number":
        literal, where = draw(st.sampled_from(NUMBERS)), draw(st.sampled_from(["metadata", "_id"]))
        record[where] = LITERAL if where == "_id" else {"n": [LITERAL]}
        reject = literal not in STORABLE_NUMBERS[where]
    elif fault == "deep":
        depth = draw(st.sampled_from(DEPTHS))
        record["metadata"], literal = {"x": LITERAL}, "[" * depth + "]" * depth
        reject = depth + 2 > 64
    elif fault == "wrong type":
        record[draw(st.sampled_from(["_id", "text", "title", "metadata"]))] = draw(json_values)
        reject = None
    elif fault == "missing":
        del record[draw(st.sampled_from(["_id", "text"]))]
    elif fault == "bytes":
        return draw(no_newline), None
    elif fault == "not an object":
        value = draw(json_values)
        return json.dumps(value).encode("utf-8", "surrogatepass"), None if isinstance(value, dict) else True
    # ensure_ascii=False writes a lone surrogate raw: as bytes, that is invalid UTF-8.
    text = json.dumps(record, ensure_ascii=ascii_only)
    if literal is not None:
        text = text.replace(json.dumps(LITERAL), literal)
    return text.encode("utf-8", "surrogatepass"), reject


def label_line(draw, query: int, document: int, fault: str | None) -> tuple[bytes, bool | None]:
    """A labels line, and whether it must be rejected (None: it may or may not be)."""
    cells = [f"q{query}", f"d{document}", draw(st.sampled_from(["0", "1", "2", " 2 ", "+3", "-0", str(2**63 - 1)]))]
    if draw(st.booleans()) and fault is None:
        cells.pop()  # no score: 1
    if fault == "padded id" or fault == "nul":
        at = draw(st.integers(0, 1))
        pad = draw(st.sampled_from(PADS[:1] + PADS[2:])) if fault == "padded id" else "\x00"
        cells[at] = draw(st.sampled_from([pad + cells[at], cells[at] + pad, insert(cells[at], pad, 1)]))
        # A padded id is an error only when padded outside; inside, it is an unknown id.
    elif fault == "unknown id":
        cells[draw(st.integers(0, 1))] = draw(st.sampled_from(["q999", "d999", "Q0", ""]))
    elif fault == "score":
        cells[2] = draw(
            st.sampled_from(["-1", "1.5", "x", "", "٣", str(2**63), str(10**30), "9" * 5000, "-" + "9" * 5000])
        )
    elif fault == "columns":
        cells = draw(st.sampled_from([cells[:1], cells + ["extra"], [" ".join(cells)]]))
    elif fault == "bytes":
        return draw(no_newline), None
    return "\t".join(cells).encode(), fault is not None


def join_lines(draw, lines: list[bytes]) -> bytes:
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + ending.join(lines) + ending


@st.composite
def datasets(draw):
    """A BEIR folder (corpus, queries, train labels) with no, one or many faulty lines.

    Returns:
        The three files' bytes, and the (file, line) of every line that must be rejected.
    """
    sizes = {name: draw(st.integers(1, 4)) for name in ("corpus", "queries", "labels")}
    lines = [(name, i) for name, n in sizes.items() for i in range(n)]
    mode = draw(st.sampled_from(["clean", "one fault", "one fault", "many faults"]))
    faulty = {"clean": set(), "one fault": {draw(st.sampled_from(lines))}}.get(mode)
    if faulty is None:
        faulty = {line for line in lines if draw(st.integers(0, 2)) == 0}
    event(f"mode: {mode}")

    def fault(name, i, choices):
        chosen = draw(st.sampled_from(choices)) if (name, i) in faulty else None
        if chosen:
            event(f"fault: {name} {chosen}")
        return chosen

    files, rejected = {}, set()
    for name, prefix in (("corpus", "d"), ("queries", "q")):
        made = [jsonl_line(draw, f"{prefix}{i}", fault(name, i, LINE_FAULTS)) for i in range(sizes[name])]
        files[name] = join_lines(draw, [line for line, _ in made])
        rejected |= {(name, i + 1) for i, (_, reject) in enumerate(made) if reject}
    everything = [(q, d) for q in range(sizes["queries"]) for d in range(sizes["corpus"])]
    pairs = draw(st.permutations(everything))[: sizes["labels"]]
    made = [label_line(draw, q, d, fault("labels", i, LABEL_FAULTS)) for i, (q, d) in enumerate(pairs)]
    header = draw(st.booleans())
    files["labels"] = join_lines(draw, [b"query-id\tcorpus-id\tscore"] * header + [line for line, _ in made])
    rejected |= {("labels", i + 1 + header) for i, (_, reject) in enumerate(made) if reject}
    return files, rejected


def text_lines(data: bytes) -> list[str]:
    """The non-blank lines, read the plain way (what a successful run must have kept, in order)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = [raw.removesuffix(b"\r").decode("utf-8") for raw in data.split(b"\n")]
    return [line for line in lines if line.strip()]


def assert_storable(value: str) -> None:
    assert "\x00" not in value
    value.encode("utf-8")  # raises on a lone surrogate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@given(data=datasets())
def test_prepare_gives_a_clear_error_or_output_that_round_trips(folder, data):
    contents, rejected = data
    files = {name: str(folder / f"{name}.{'tsv' if name == 'labels' else 'jsonl'}") for name in contents}
    for name, content in contents.items():
        with open(files[name], "wb") as f:
            f.write(content)
    try:
        prepared = prepare_data(files["corpus"], files["queries"], files["labels"], test_fraction=0.0)
    except DataValidationError as err:
        event("outcome: input error")
        message = str(err)
        assert err.problems and "Traceback" not in message
        assert_storable(message)  # printable as UTF-8, no NUL
        for problem in err.problems:
            assert problem.file in files.values()
            if problem.line is None:
                assert "has no" in problem.message, problem
            else:
                assert f"{problem.file}:{problem.line}: " in message
        reported = {(p.file, p.line) for p in err.problems}
        missed = [(name, line) for name, line in sorted(rejected) if (files[name], line) not in reported]
        assert not missed, f"faulty lines not reported: {missed}\n{message}"
        return
    assert not rejected, f"lines that must be rejected were accepted: {sorted(rejected)}"

    event("outcome: written")
    out = folder / "out"
    prepared.write(str(out / "corpus"), str(out / "queries"), {"train": str(out / "train")})
    for name, columns in (("corpus", ("_id", "title", "text")), ("queries", ("_id", "text"))):
        rows = pq.read_table(out / name).to_pylist()
        expected = [json.loads(line) for line in text_lines(contents[name])]
        assert [tuple(row[c] for c in columns) for row in rows] == [
            (str(obj["_id"]),) + tuple(obj.get(c) or "" for c in columns[1:]) for obj in expected
        ]
        for row, obj in zip(rows, expected):
            for value in row.values():
                assert_storable(value)
            assert row["_id"] == row["_id"].strip()
            metadata = json.loads(row["metadata"], parse_constant=pytest.fail)
            assert metadata == (obj.get("metadata") or {})
            assert "\\u0000" not in row["metadata"]
            assert all(math.isfinite(x) for x in _numbers(metadata))
            assert _depth(obj) <= 64

    table = pq.read_table(out / "train")
    assert str(table.schema.field("score").type) == "int64"
    lines = text_lines(contents["labels"])
    if lines[0].split("\t")[:2] == ["query-id", "corpus-id"]:
        lines = lines[1:]
    cells = [line.split("\t") for line in lines]
    assert [(r["query-id"], r["corpus-id"], r["score"]) for r in table.to_pylist()] == [
        (c[0], c[1], int(c[2]) if len(c) == 3 else 1) for c in cells
    ]


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _numbers(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from _numbers(child)
    elif isinstance(value, list):
        for child in value:
            yield from _numbers(child)
