"""The streaming job's database writes: one window's changes of one shard, applied by the vector store.

`WriteChanges` turns the rows and version records that met in one write into a plan
(`embedpipe.embed.streaming.planning.plan_writes`) and applies it with the vector store's writer
(`embedpipe.vectorstore.PgVectorWriter`: idempotent `ON CONFLICT (id)` upserts and document deletes, each
one transaction, retried on a dropped connection). No SQL here: the writer owns it.
"""

from __future__ import annotations

import logging

import apache_beam as beam

from embedpipe.embed import documents as docs
from embedpipe.embed.runtime import counter
from embedpipe.embed.sinks import vector_batch
from embedpipe.embed.streaming.planning import plan_writes

log = logging.getLogger(__name__)


class WriteChanges(beam.DoFn):
    """One window's changes of one shard -> the database: deletes, one upsert, the documents' vanished chunks."""

    def __init__(self, database, table: str, chunked: bool):
        self._database, self._table, self._chunked = database, table, chunked
        self._upserted = counter("documents_upserted")
        self._deleted = counter("documents_deleted")
        self._rows_written = counter("database_rows_written")
        self._rows_deleted = counter("database_rows_deleted")

    def setup(self):
        from embedpipe.vectorstore import PgVectorWriter

        self._writer = PgVectorWriter(self._database, self._table)

    def process(self, element, window=beam.DoFn.WindowParam):
        _, ops = element
        plan = plan_writes(ops, self._chunked)
        removed = self._writer.delete_documents(plan.deleted, chunk_separator=docs.CHUNK_SEPARATOR)
        if plan.rows:
            self._writer.write(vector_batch(plan.rows, source="embed stream"))
            # A changed document with fewer chunks than before: its last chunks' rows go.
            removed += self._writer.delete_documents(
                plan.upserted, keep_ids=[r.id for r in plan.rows], chunk_separator=docs.CHUNK_SEPARATOR
            )
        self._upserted.inc(len(plan.upserted))
        self._deleted.inc(len(plan.deleted))
        self._rows_written.inc(len(plan.rows))
        self._rows_deleted.inc(removed)
        log.info(
            "window %s: upserted %d documents (%d rows), deleted %d documents (%d rows removed)",
            window,
            len(plan.upserted),
            len(plan.rows),
            len(plan.deleted),
            removed,
        )
        yield {"upserted": plan.upserted, "deleted": plan.deleted, "rows": len(plan.rows), "rows_removed": removed}


__all__ = ["WriteChanges"]
