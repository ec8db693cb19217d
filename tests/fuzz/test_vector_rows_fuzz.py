"""Properties of the vector store's checks, against the real embedded PostgreSQL (`pg_uri`).

What `validate_batch` accepts, PostgreSQL stores and scores (no error, no NaN score, the text back as it
was sent); what it refuses, it refuses naming the row. Index names of different tables never collide.
"""

import json
import math
import uuid

import numpy as np
import psycopg
from hypothesis import given
from hypothesis import strategies as st

from embedpipe.validation import DataValidationError
from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch, validate_batch
from embedpipe.vectorstore.identifiers import IDENTIFIER_PATTERN, unique_derived_name

DIM = 4
awkward_text = st.text(
    alphabet=st.sampled_from(["a", "Z", " ", "é", "\x00", "\ud800", "\udc00", "😀", "\\", '"', "\n"])
    | st.characters(),
    max_size=8,
)
values = st.sampled_from([0.0, -0.0, 1e-30, 1e-20, 1e-19, 2e-19, 0.5, -2.0, 1e18, 1e19, 3e19, math.nan, math.inf])
values = values | st.floats(width=32, allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | awkward_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(awkward_text, inner, max_size=3),
    max_leaves=6,
)
metadata = (
    st.none()
    | st.dictionaries(awkward_text, json_values, max_size=3).map(json.dumps)
    | st.sampled_from(['{"a": NaN}', '{"a": Infinity}', "[1]", "{", '{"a": "\\u0000"}', '{"a": "\\ud83d"}', ""])
)
rows = st.lists(
    st.tuples(awkward_text, st.lists(values, min_size=DIM, max_size=DIM), awkward_text | st.none(), metadata),
    min_size=1,
    max_size=4,
)


@given(rows=rows)
def test_what_validation_accepts_postgres_stores_and_scores(pg_uri, rows):
    batch = VectorBatch(
        [r[0] for r in rows], np.array([r[1] for r in rows], np.float32), [r[2] for r in rows], [r[3] for r in rows]
    )
    try:
        validate_batch(batch)
    except DataValidationError as err:
        for problem in err.problems:  # every refusal names its row
            assert problem.message.startswith("row "), problem
        return
    table = f"fz_{uuid.uuid4().hex[:12]}"
    try:
        result = PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(batch)
        assert result.inserted == len(batch)
        with psycopg.connect(pg_uri) as conn:
            stored = conn.execute(
                f'SELECT id, content, metadata::text, embedding <=> embedding FROM "{table}"'
            ).fetchall()
        assert sorted((r[0], r[1]) for r in stored) == sorted(zip(batch.ids, batch.contents, strict=True))
        for ident, _, meta, self_distance in stored:
            assert not math.isnan(self_distance) and abs(self_distance) < 1e-3, (ident, self_distance)
            sent = batch.metadata[batch.ids.index(ident)]
            as_floats = {"parse_int": float, "parse_float": float}  # jsonb writes 1e16 as 10000000000000000
            assert (json.loads(meta, **as_floats) if meta else None) == (
                json.loads(sent, **as_floats) if sent else None
            )
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


table_names = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)


@given(a=table_names, b=table_names, suffix=st.sampled_from(["embedding_hnsw", "embedding_ivfflat", "staging"]))
def test_derived_names_of_different_tables_differ_and_fit(a, b, suffix):
    name_a, name_b = unique_derived_name(a, suffix), unique_derived_name(b, suffix)
    for table, name in ((a, name_a), (b, name_b)):
        assert IDENTIFIER_PATTERN.match(name) and len(name.encode()) <= 63
        assert name.endswith("_" + suffix) and name.startswith(table[:20])
    assert (name_a == name_b) == (a == b)
