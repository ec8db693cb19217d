"""What a search of a pgvector table returns, whatever the mode (`search`, `hybrid`), and what both check
of the query vector and make of a distance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embedpipe.vectorstore.rows import TINY_VALUE


@dataclass
class SearchHit:
    """One result: `score` is 1 - cosine distance (cosine), -distance (ip: the inner product) or -L2 distance
    in vector search, the idf-weighted `ts_rank` sum in text search, and the reciprocal rank fusion score in hybrid search."""

    id: str
    score: float
    content: str | None
    metadata: dict | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "content": self.content, "metadata": self.metadata}


def json_value(value):
    """A JSONB value as psycopg (a dict) or pg8000 (its text) returns it, as Python."""
    import json

    if value is None or isinstance(value, dict):
        return value
    return json.loads(value)


def checked_query_vector(vector, metric: str) -> np.ndarray:
    """The query vector as float32, refused when it holds NaN/inf or, for cosine, has no direction.

    Raises:
        ValueError: saying which.
    """
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not np.isfinite(vector).all():
        raise ValueError("the query vector contains NaN or inf")
    if metric == "cosine" and (not vector.size or np.abs(vector).max() < TINY_VALUE):
        raise ValueError("the query vector is all zeros: it has no direction to compare by cosine")
    return vector


def score_of_distance(metric: str, distance: float) -> float:
    """A hit's score from pgvector's distance: higher is nearer."""
    if metric == "cosine":
        return 1.0 - distance
    return -distance  # <#> is the negative inner product; <-> the L2 distance
