"""Search modes of a pgvector table: `vector`, `text` (full-text) and `hybrid` (reciprocal rank fusion).

Hybrid search runs the vector ranking (top `vector_depth` by distance) and the full-text ranking (top
`text_depth` by an idf-weighted `ts_rank`, see `text_rank`) and fuses them by reciprocal rank fusion (Cormack et al.
2009): a row's score is the sum over the rankings it is in of `weight / (rrf_k + rank)`, rank from 1.
All of it is one SQL statement, one round trip; `rrf` is the same fusion in Python (tests, other stores).
A metadata filter (`filters`) restricts both rankings before they are fused.

Example:
    >>> from embedpipe.vectorstore.hybrid import SearchSettings, search_table        # doctest: +SKIP
    >>> hits = search_table(uri, "embeddings", "aspirin heart attack", vector, SearchSettings(mode="hybrid"))  # doctest: +SKIP
    >>> [hit.id for hit in hits][:3]                                                    # doctest: +SKIP
    ['4983', '1227', '88']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore import fulltext
from embedpipe.vectorstore.filter_sql import compile_filter_named
from embedpipe.vectorstore.filters import Filter
from embedpipe.vectorstore.hits import SearchHit, checked_query_vector, json_value, score_of_distance
from embedpipe.vectorstore.postgres import PgVectorWriter
from embedpipe.vectorstore.scan import ScanSettings, apply_scan_settings
from embedpipe.vectorstore.schema import METRICS, existing_column_type, parse_column_type
from embedpipe.vectorstore.text_rank import NORMALIZATIONS, text_ranking

SEARCH_MODES = ("vector", "text", "hybrid")
#: Defaults of the text side and the fusion, chosen on SciFact's train queries (benchmarks/README.md, search).
COMMON_FRACTION = 0.3
NORMALIZATION = 16
RRF_K = 20


@dataclass
class SearchSettings:
    """How one query searches a table.

    Attributes:
        mode: "vector" (nearest embeddings), "text" (full-text, idf-weighted) or "hybrid" (both, fused).
        metric: "cosine", "ip" or "l2": must match the vector index's ops for the index to be used.
        rrf_k: Reciprocal rank fusion's constant (the paper's 60 flattens the rank weights more; 20 chosen
            on SciFact's train queries).
        vector_depth: Hybrid: how many rows the vector ranking contributes.
        text_depth: Hybrid: how many rows the text ranking contributes.
        vector_weight: Hybrid: the vector ranking's weight in the fusion.
        text_weight: Hybrid: the text ranking's weight in the fusion.
        ef_search: HNSW `ef_search` (None = the server's, 40); raised to the rows the vector side needs,
            since an HNSW scan returns at most `ef_search` rows.
        exact: The vector side without its index (a sequential scan: exact, slower); for evaluations.
        common_fraction: Text: query terms in more than this fraction of the rows are left out (the
            rarest term is always kept); 1.0 keeps every term (`text_rank`).
        normalization: Text: `ts_rank`'s length normalisation of each term's frequency (16: divided by
            1 + log of the document's unique words; 0 none, 1 log length, 2 length, ...).
    """

    mode: str = "vector"
    metric: str = "cosine"
    rrf_k: int = RRF_K
    vector_depth: int = 100
    text_depth: int = 100
    vector_weight: float = 1.0
    text_weight: float = 1.0
    ef_search: int | None = None
    exact: bool = False
    common_fraction: float = COMMON_FRACTION
    normalization: int = NORMALIZATION

    def check(self) -> SearchSettings:
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"search mode {self.mode!r} is not one of {SEARCH_MODES}")
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} is not one of {tuple(METRICS)}")
        for name in ("rrf_k", "vector_depth", "text_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "rrf_k" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'rrf_k' else 'positive'} integer")
        for name in ("vector_weight", "text_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        fraction = self.common_fraction
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
            raise ValueError(f"common_fraction must be in (0, 1], got {fraction!r}")
        if self.normalization not in NORMALIZATIONS or isinstance(self.normalization, bool):
            raise ValueError(f"normalization must be ts_rank's flags, an integer 0..63, got {self.normalization!r}")
        return self


def rrf(
    rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of rankings (ids, best first): (id, score), best first, ties by id."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, ident in enumerate(ranking, 1):
            scores[ident] = scores.get(ident, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def search_table(
    connect,
    table: str,
    text: str,
    vector: Sequence[float] | np.ndarray | None,
    settings: SearchSettings | None = None,
    *,
    k: int = 5,
    filter: Filter | None = None,  # noqa: A002 - the word users know
    scan: ScanSettings | None = None,
) -> list[SearchHit]:
    """The top-k rows of `table` for one query, in `settings.mode`.

    Args:
        connect: URI, ConnectionSettings or connection factory (see PgVectorWriter).
        table: Table name (validated).
        text: The query text (text and hybrid modes).
        vector: The query embedding (vector and hybrid modes; None for text).
        settings: The mode and its parameters (default: vector search).
        k: How many rows.
        filter: A parsed metadata filter (`filters.parse_filter`): both rankings keep only matching rows.
        scan: The vector side's index scan with a filter (`scan.ScanSettings`; default: iterative).

    Raises:
        ValueError: bad settings, a table that does not exist or has no full-text column (text, hybrid),
            a query vector of the wrong dimension.
    """
    settings = (settings or SearchSettings()).check()
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    uses_vector, uses_text = settings.mode != "text", settings.mode != "vector"
    if uses_vector:
        vector = _checked_vector(vector, settings.metric)
    reader = PgVectorWriter(connect, table, index=None)
    params: dict = {"k": k, "text": text}
    condition = None
    if filter is not None:
        condition, filter_params = compile_filter_named(filter, "filter_")
        params.update(filter_params)

    def work(session) -> list[SearchHit]:
        session.register_vector()
        kind = existing_column_type(session, table)
        if kind is None:
            raise ValueError(f"table {table!r} does not exist; upload vectors first")
        parts = []
        if uses_vector:
            _, dimension = parse_column_type(kind)
            if vector.shape[0] != dimension:
                raise ValueError(
                    f"the query has {vector.shape[0]} dimensions, table {table!r} holds {dimension} (same model?)"
                )
            params["vector"] = "[" + ",".join(repr(float(x)) for x in vector) + "]"
            params["vector_depth"] = settings.vector_depth if uses_text else k
            if settings.exact:
                session.execute("SELECT set_config('enable_indexscan', 'off', true)")
            else:
                ef = min(max(params["vector_depth"], settings.ef_search or 0), 1000)
                base = scan or ScanSettings()
                apply_scan_settings(
                    session,
                    ScanSettings(ef, base.iterative_scan, base.max_scan_tuples, base.filtered_ef_search),
                    filtered=condition is not None,
                )
            parts.append(_vector_ranking(reader.ident, kind, METRICS[settings.metric][0], condition))
        if uses_text:
            _, config = fulltext.text_column(session, table)
            if not config:
                raise ValueError(
                    f"table {table!r} has no full-text column ({fulltext.COLUMN}): write to it once with "
                    "embedpipe upload (or PgVectorWriter) with text_search set, e.g. 'english'"
                )
            params["text_depth"] = settings.text_depth if uses_vector else k
            # every per-term count and scan must be a GIN bitmap scan: without the table's statistics (a
            # table just written, before autovacuum's ANALYZE) the planner reads every row's tsvector per
            # term instead, 10x slower on SciFact (text_rank)
            session.execute("SELECT set_config('enable_seqscan', 'off', true)")
            query = fulltext.or_query(fulltext.function_identifier(table), config, sql.Placeholder("text"))
            params.update(common=float(settings.common_fraction), normalization=settings.normalization)
            parts.append(text_ranking(reader.ident, query, condition))
        if settings.mode == "hybrid":
            params.update(rrf_k=settings.rrf_k, vw=float(settings.vector_weight), tw=float(settings.text_weight))
            final = sql.SQL(
                ", fused AS (SELECT id, sum(w / (%(rrf_k)s + rank)) AS score FROM ("
                "SELECT id, rank, %(vw)s::float8 AS w FROM vec UNION ALL SELECT id, rank, %(tw)s::float8 FROM txt) r"
                " GROUP BY id)"
                " SELECT f.id, f.score, t.content, t.metadata FROM fused f JOIN {t} t ON t.id = f.id"
                " ORDER BY f.score DESC, f.id LIMIT %(k)s"
            )
        else:
            source = "vec" if uses_vector else "txt"
            final = sql.SQL(
                " SELECT r.id, r.score, t.content, t.metadata FROM " + source + " r JOIN {t} t ON t.id = r.id"
                " ORDER BY r.rank"
            )
        statement = sql.SQL("WITH ") + sql.SQL(", ").join(parts) + final.format(t=reader.ident)
        rows = session.execute(statement, params)
        return [SearchHit(str(r[0]), float(r[1]), r[2], json_value(r[3])) for r in rows]

    hits = reader.run_transaction(work)[0]
    if settings.mode == "vector":
        hits = [_vector_hit(hit, settings.metric) for hit in hits]
    return hits


def _checked_vector(vector, metric: str) -> np.ndarray:
    if vector is None:
        raise ValueError("vector and hybrid search need the query's embedding")
    return checked_query_vector(vector, metric)


def _vector_ranking(table: sql.Composable, kind: str, operator: str, condition: sql.Composable | None) -> sql.Composed:
    # a zero vector stored before writers refused them has no cosine distance (NaN): never ranked;
    # an iterative scan with a filter may return rows slightly out of order: ranked by distance here
    return sql.SQL(
        "vec AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS rank, distance AS score FROM ("
        "SELECT id, embedding {op} %(vector)s::{kind} AS distance FROM {t}{where}"
        " ORDER BY embedding {op} %(vector)s::{kind} LIMIT %(vector_depth)s) v"
        " WHERE distance IS NOT NULL AND distance <> 'NaN'::float8)"
    ).format(
        op=sql.SQL(operator),
        kind=sql.SQL(kind),
        t=table,
        where=sql.SQL(" WHERE ") + condition if condition is not None else sql.SQL(""),
    )


def _vector_hit(hit: SearchHit, metric: str) -> SearchHit:
    return SearchHit(hit.id, score_of_distance(metric, hit.score), hit.content, hit.metadata)
