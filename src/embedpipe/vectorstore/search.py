"""Searching a pgvector table: the query embedded with the corpus's model and query prompt, top-k by distance.

Metadata filters are structured conditions (`metadata->>'key' = value`, keys and values passed as
parameters, never spliced into SQL) combined with the vector search in one query, as AlloyDB users
write them. With filters, pgvector's iterative index scan is switched on so a selective filter still
returns k rows.

Example:
    >>> from embedpipe.vectorstore.search import search_text                       # doctest: +SKIP
    >>> hits = search_text(uri, "aspirin and heart attacks", k=3, where={"title": "X"})  # doctest: +SKIP
    >>> hits[0].id, round(hits[0].score, 3)                                         # doctest: +SKIP
    ('4983', 0.712)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from psycopg import sql

from embedpipe.vectorstore.hits import SearchHit
from embedpipe.vectorstore.hybrid import SearchSettings, search_table
from embedpipe.vectorstore.postgres import PgVectorWriter
from embedpipe.vectorstore.rows import TINY_VALUE
from embedpipe.vectorstore.schema import METRICS, parse_column_type


def _score(metric: str, distance: float) -> float:
    if metric == "cosine":
        return 1.0 - distance
    return -distance  # <#> is the negative inner product; <-> the L2 distance


def search_vector(
    connect,
    vector: Sequence[float] | np.ndarray,
    *,
    table: str = "embeddings",
    k: int = 5,
    where: Mapping[str, Any] | None = None,
    metric: str = "cosine",
    ef_search: int | None = None,
) -> list[SearchHit]:
    """Top-k rows of `table` nearest to `vector`, optionally only rows whose metadata matches `where`.

    Args:
        connect: URI, ConnectionSettings or connection factory (see PgVectorWriter).
        vector: The query embedding (same dimension as the table).
        table: Table name (validated).
        k: How many rows.
        where: {key: value}: rows with `metadata->>key = str(value)` (all must hold).
        metric: "cosine", "ip" or "l2": must match the index's ops for the index to be used.
        ef_search: HNSW `ef_search` for this query (None = the server's, 40).
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {tuple(METRICS)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    reader = PgVectorWriter(connect, table, index=None)
    operator = sql.SQL(METRICS[metric][0])
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.isfinite(vector).all():
        raise ValueError("the query vector contains NaN or inf")
    if metric == "cosine" and (not vector.size or np.abs(vector).max() < TINY_VALUE):
        raise ValueError("the query vector is all zeros: it has no direction to compare by cosine")
    conditions, params = [], []
    for key, value in (where or {}).items():
        conditions.append(sql.SQL("metadata->>%s = %s"))
        params += [str(key), value if isinstance(value, str) else _json_text(value)]

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
        if conditions:  # keep scanning the index until k rows pass the filter (pgvector >= 0.8)
            _set_local(session, "hnsw.iterative_scan", "relaxed_order")
        if ef_search:
            _set_local(session, "hnsw.ef_search", str(int(ef_search)))
        query = sql.SQL(
            "SELECT id, embedding {op} %s::{kind} AS distance, content, metadata FROM {table}{where} "
            "ORDER BY embedding {op} %s::{kind} LIMIT %s"
        ).format(
            op=operator,
            kind=sql.SQL(kind),
            table=reader.ident,
            where=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL(""),
        )
        rows = session.execute(query, [literal, *params, literal, k])
        # a zero vector stored before writers refused them has no cosine distance (NaN): never a hit
        return [
            SearchHit(str(r[0]), _score(metric, float(r[1])), r[2], _json_value(r[3]))
            for r in rows
            if r[1] is not None and not math.isnan(float(r[1]))
        ]

    # relaxed_order may return rows slightly out of order: sort the k we got
    hits = reader.run_transaction(work)[0]
    return sorted(hits, key=lambda h: -h.score)


def _set_local(session, name: str, value: str) -> None:
    session.execute("SAVEPOINT embedpipe_setting")
    try:
        session.execute("SELECT set_config(%s, %s, true)", (name, value))
        session.execute("RELEASE SAVEPOINT embedpipe_setting")
    except Exception:  # noqa: BLE001 - an older pgvector without this setting: search without it
        session.execute("ROLLBACK TO SAVEPOINT embedpipe_setting")


def _json_text(value) -> str:
    import json

    return (
        json.dumps(value)
        if isinstance(value, (dict, list))
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _json_value(value):
    import json

    if value is None or isinstance(value, dict):
        return value
    return json.loads(value)


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
    mode: SearchSettings | str = "vector",
) -> list[SearchHit]:
    """Embeds `query` with `model` and its query prompt for `task_type`, then `search_vector`; or searches in
    another mode (`hybrid.SearchSettings`, or its name: "text" loads no model, "hybrid" fuses both).

    Use the model (and task type) the corpus was embedded with; `loaded_model` skips loading it again.
    """
    from embedpipe.models import encode, load_model
    from embedpipe.prompts import resolve_prompts

    settings = (SearchSettings(mode=mode, metric=metric) if isinstance(mode, str) else mode).check()
    if settings.mode != "vector" and where:
        raise ValueError(f"metadata filters work in vector search only, not in mode {settings.mode!r}")
    vector = None
    if settings.mode != "text":
        st_model = loaded_model if loaded_model is not None else load_model(model)
        prompts = resolve_prompts(task_type, getattr(st_model, "prompts", None))
        vector = encode(st_model, prompts.format_queries([query]))[0]
    if settings.mode != "vector":
        return search_table(connect, table, query, vector, settings, k=k)
    return search_vector(connect, vector, table=table, k=k, where=where, metric=metric)
