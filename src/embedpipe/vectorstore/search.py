"""Searching a pgvector table: the query embedded with the corpus's model and query prompt, top-k by distance.

Metadata filters are written in the filter language of `vectorstore.filters` (`year >= 2020 and
source in ('pubmed', 'pmc')`), compiled to parameterised SQL (`filter_sql`: keys and values are query
parameters, never spliced into SQL) and combined with the search in one query (in text and hybrid mode
through `hybrid.search_table`, both rankings filtered). With a filter,
pgvector's iterative index scan is switched on (`scan.ScanSettings`) so a selective filter still
returns k rows. The older `where={key: value}` is mapped onto the language (`filter_build.where_filter`).
Only these library functions and `embedpipe search` search: the serving endpoint (`embedpipe serve`,
Vertex's text-embedding `:predict` contract) embeds texts and has no search, so no filter applies there.

Example:
    >>> from embedpipe.vectorstore.search import search_text                       # doctest: +SKIP
    >>> hits = search_text(uri, "aspirin and heart attacks", k=3, filter="year >= 2010")  # doctest: +SKIP
    >>> hits[0].id, round(hits[0].score, 3)                                         # doctest: +SKIP
    ('4983', 0.712)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore.filter_build import combine, where_filter
from embedpipe.vectorstore.filter_sql import compile_filter
from embedpipe.vectorstore.filters import Filter, parse_filter
from embedpipe.vectorstore.hits import SearchHit, checked_query_vector, json_value, score_of_distance
from embedpipe.vectorstore.hybrid import SearchSettings, search_table
from embedpipe.vectorstore.postgres import PgVectorWriter
from embedpipe.vectorstore.scan import ScanSettings, apply_scan_settings
from embedpipe.vectorstore.schema import METRICS, parse_column_type


def search_vector(
    connect,
    vector: Sequence[float] | np.ndarray,
    *,
    table: str = "embeddings",
    k: int = 5,
    where: Mapping[str, Any] | None = None,
    metric: str = "cosine",
    ef_search: int | None = None,
    filter: str | Filter | None = None,  # noqa: A002 - the word users know
    scan: ScanSettings | None = None,
) -> list[SearchHit]:
    """Top-k rows of `table` nearest to `vector`, optionally only rows whose metadata matches a filter.

    Args:
        connect: URI, ConnectionSettings or connection factory (see PgVectorWriter).
        vector: The query embedding (same dimension as the table).
        table: Table name (validated).
        k: How many rows.
        where: {key: value}: rows whose top-level `key` equals the value as text or as its typed
            value (all must hold; `filter_build.where_filter`). Combined with `filter` by `and`.
        metric: "cosine", "ip" or "l2": must match the index's ops for the index to be used.
        ef_search: HNSW `ef_search` for this query (None = the server's, 40); overrides `scan`'s.
        filter: A filter (`vectorstore.filters`), e.g. `"year >= 2020 and lang in ('en', 'ja')"`.
        scan: Index scan settings (`scan.ScanSettings`: iterative scan with a filter, ef_search).

    Raises:
        FilterError: the filter does not parse or cannot run (its column shown); nothing is run.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {tuple(METRICS)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    reader = PgVectorWriter(connect, table, index=None)
    operator = sql.SQL(METRICS[metric][0])
    vector = checked_query_vector(vector, metric)
    tree = combine(where_filter(where or {}), parse_filter(filter) if isinstance(filter, str) else filter)
    condition, params = compile_filter(tree) if tree is not None else (None, [])
    scan = scan or ScanSettings()
    if ef_search:
        scan = ScanSettings(ef_search, scan.iterative_scan, scan.max_scan_tuples, scan.filtered_ef_search)
    scan.check()

    def work(session) -> list[SearchHit]:
        session.register_vector()
        kind = reader.existing_column_type(session)
        if kind is None:
            raise ValueError(f"table {table!r} does not exist; upload vectors first")
        vector_kind, dimension = parse_column_type(kind)
        if vector.shape[0] != dimension:
            raise ValueError(
                f"the query has {vector.shape[0]} dimensions, table {table!r} holds {dimension} (same model?)"
            )
        literal = "[" + ",".join(repr(float(x)) for x in vector) + "]"
        apply_scan_settings(session, scan, filtered=condition is not None)
        query = sql.SQL(
            "SELECT id, embedding {op} %s::{kind} AS distance, content, metadata FROM {table}{where} "
            "ORDER BY embedding {op} %s::{kind} LIMIT %s"
        ).format(
            op=operator,
            kind=sql.SQL(kind),
            table=reader.ident,
            where=sql.SQL(" WHERE ") + condition if condition is not None else sql.SQL(""),
        )
        rows = session.execute(query, [literal, *params, literal, k])
        # a zero vector stored before writers refused them has no cosine distance (NaN): never a hit
        return [
            SearchHit(str(r[0]), score_of_distance(metric, float(r[1])), r[2], json_value(r[3]))
            for r in rows
            if r[1] is not None and not math.isnan(float(r[1]))
        ]

    # relaxed_order may return rows slightly out of order: sort the k we got
    hits = reader.run_transaction(work)[0]
    return sorted(hits, key=lambda h: -h.score)


def search_text(
    connect,
    query: str,
    *,
    table: str = "embeddings",
    model: str = "default",
    task_type: str = "RETRIEVAL_QUERY",
    k: int = 5,
    where: Mapping[str, Any] | None = None,
    metric: str = "cosine",
    loaded_model=None,
    filter: str | Filter | None = None,  # noqa: A002 - the word users know
    scan: ScanSettings | None = None,
    mode: SearchSettings | str = "vector",
) -> list[SearchHit]:
    """Embeds `query` with `model` and its query prompt for `task_type`, then `search_vector`; or searches in
    another mode (`hybrid.SearchSettings`, or its name: "text" loads no model, "hybrid" fuses both).

    Use the model (and task type) the corpus was embedded with; `loaded_model` skips loading it again.
    A string filter is parsed before the model is loaded, so a bad one fails at once; in every mode it
    restricts the rows searched (in hybrid mode both rankings before they are fused).
    """
    if isinstance(filter, str):
        filter = parse_filter(filter)  # noqa: A001
    from embedpipe.models import encode, load_model
    from embedpipe.prompts import resolve_prompts

    settings = (SearchSettings(mode=mode, metric=metric) if isinstance(mode, str) else mode).check()
    vector = None
    if settings.mode != "text":
        st_model = loaded_model if loaded_model is not None else load_model(model)
        prompts = resolve_prompts(task_type, getattr(st_model, "prompts", None))
        vector = encode(st_model, prompts.format_queries([query]))[0]
    if settings.mode != "vector":
        tree = combine(where_filter(where or {}), filter)
        return search_table(connect, table, query, vector, settings, k=k, filter=tree, scan=scan)
    return search_vector(connect, vector, table=table, k=k, where=where, metric=metric, filter=filter, scan=scan)
