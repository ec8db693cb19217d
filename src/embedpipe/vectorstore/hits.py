"""What a search of a pgvector table returns, whatever the mode (`search`, `hybrid`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
