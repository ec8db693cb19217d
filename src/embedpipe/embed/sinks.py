"""Beam sinks into the vector store: the job's rows upserted, stale ids deleted, by `PgVectorWriter`.

The writing itself is the vector store's (`embedpipe.vectorstore.PgVectorWriter`: COPY into a staging
table, one upsert transaction per batch, retried on a dropped connection); these transforms only batch
the PCollection and hand each batch over. Every batch is an idempotent upsert, so a bundle Beam retries
writes the same rows again harmlessly. The first batch creates the table and its index.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed.runtime import counter
from embedpipe.embed.types import VectorRow


def vector_batch(rows: Sequence[VectorRow], *, source: str):
    """`VectorRow`s -> the vector store's `VectorBatch` (one matrix of float32)."""
    import numpy as np

    from embedpipe.vectorstore import VectorBatch

    return VectorBatch(
        [r.id for r in rows],
        np.asarray([r.embedding for r in rows], dtype=np.float32),
        [r.content for r in rows],
        [r.metadata for r in rows],
        source=source,
    )


class _Upsert(beam.DoFn):
    def __init__(self, database_uri: str, table: str):
        self._uri, self._table = database_uri, table
        self._rows = counter("database_rows_written")

    def setup(self):
        from embedpipe.vectorstore import PgVectorWriter

        self._writer = PgVectorWriter(self._uri, self._table)

    def process(self, batch):
        self._writer.write(vector_batch(batch, source="embed job"))
        self._rows.inc(len(batch))


class _Delete(beam.DoFn):
    def __init__(self, database_uri: str, table: str):
        self._uri, self._table = database_uri, table
        self._deleted = counter("database_rows_deleted")

    def setup(self):
        from embedpipe.vectorstore import PgVectorWriter

        self._writer = PgVectorWriter(self._uri, self._table)

    def process(self, ids):
        self._deleted.inc(self._writer.delete(list(ids)))


class WriteToVectorStore(beam.PTransform):
    """Upserts `VectorRow`s (`id`, `embedding`, `content`, `metadata`) into a pgvector table.

    Args:
        database_uri: Postgres URI (the embedded database, AlloyDB or Cloud SQL reachable from the workers).
        table: `table` or `schema.table`.
        batch_rows: Rows per upsert transaction.
    """

    def __init__(self, database_uri: str, table: str = "embeddings", batch_rows: int = 2000):
        super().__init__()
        self._uri, self._table, self._batch_rows = database_uri, table, batch_rows

    def expand(self, rows):
        return (
            rows
            | "Batch" >> beam.BatchElements(min_batch_size=min(100, self._batch_rows), max_batch_size=self._batch_rows)
            | "Upsert" >> beam.ParDo(_Upsert(self._uri, self._table))
        )


class DeleteFromVectorStore(beam.PTransform):
    """Deletes rows by id from a pgvector table (ids of removed documents and vanished chunks)."""

    def __init__(self, database_uri: str, table: str = "embeddings", batch_rows: int = 2000):
        super().__init__()
        self._uri, self._table, self._batch_rows = database_uri, table, batch_rows

    def expand(self, ids):
        return (
            ids
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_rows)
            | "Delete" >> beam.ParDo(_Delete(self._uri, self._table))
        )
