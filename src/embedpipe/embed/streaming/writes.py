"""The streaming job's database writes: one window's changes of one shard, applied by the vector store.

`WriteChanges` turns the rows and version records that met in one write into a plan
(`embedpipe.embed.streaming.planning.plan_writes`), drops the documents whose message is older than the
version the table already holds (stale: a dead letter with the reason, counted), applies the rest with
the vector store's writer (`embedpipe.vectorstore.PgVectorWriter`: idempotent `ON CONFLICT (id)` upserts
and document deletes, each one transaction, retried on a dropped connection) and records the versions
applied (`embedpipe.vectorstore.versions`). No SQL here: the vector store owns it.

Stale checks need no lock across writes: a document always goes to the same shard, and a runner processes
one key's writes one at a time (Dataflow streaming does), so no other writer applies the same document
between the read of its stored version and the write. Every step is idempotent: a retried bundle finds its
own version stored, which is not stale, and writes the same rows again.
"""

from __future__ import annotations

import logging

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed import documents as docs
from embedpipe.embed.runtime import counter
from embedpipe.embed.sinks import vector_batch
from embedpipe.embed.streaming.planning import given_version, plan_writes, stale_reason

log = logging.getLogger(__name__)


class WriteChanges(beam.DoFn):
    """One window's changes of one shard -> the database: deletes, one upsert, the documents' vanished chunks.

    Outputs one summary per write; stale messages as `DeadLetter`s on the `dead` output.
    """

    def __init__(self, database, table: str, chunked: bool):
        self._database, self._table, self._chunked = database, table, chunked
        self._upserted = counter("documents_upserted")
        self._deleted = counter("documents_deleted")
        self._rows_written = counter("database_rows_written")
        self._rows_deleted = counter("database_rows_deleted")
        self._stale = counter("messages_stale")
        self._dead = counter("dead_letters")

    def setup(self):
        from embedpipe.vectorstore import PgVectorWriter

        self._writer = PgVectorWriter(self._database, self._table)

    def teardown(self):
        connector = getattr(getattr(getattr(self, "_writer", None), "connect", None), "connector", None)
        if connector is not None and hasattr(connector, "close"):  # AlloyDB / Cloud SQL connectors
            connector.close()

    def _drop_stale(self, plan):
        """The plan less its stale documents, the dead letters for those, and the versions to record."""
        from embedpipe.vectorstore.versions import DocumentVersion, stored_versions

        given = {doc: given_version(order) for doc, order in plan.orders.items()}
        given = {doc: version for doc, version in given.items() if version != (None, None)}
        stored = stored_versions(self._writer, list(given)) if given else {}
        dead = []
        for doc, version in sorted(given.items()):
            reason = stale_reason(version, stored.get(doc))
            if reason:
                record = {"id": doc, "sequence": version[0], "updated_at": version[1], "delete": doc in plan.deleted}
                dead.append(docs.dead_letter(doc, reason, {k: v for k, v in record.items() if v is not None}))
        if dead:
            plan = plan.without([d.id for d in dead], self._chunked)
        deleted = set(plan.deleted)
        versions = {
            doc: DocumentVersion(*version, deleted=doc in deleted)
            for doc, version in given.items()
            if doc in plan.orders
        }
        return plan, dead, versions

    def process(self, element, window=beam.DoFn.WindowParam):
        from embedpipe.vectorstore.versions import record_versions

        _, ops = element
        plan, dead, versions = self._drop_stale(plan_writes(ops, self._chunked))
        for letter in dead:
            log.warning("stale message for document %s: %s", letter.id, letter.reason)
            yield beam.pvalue.TaggedOutput("dead", letter)
        self._stale.inc(len(dead))
        self._dead.inc(len(dead))
        removed = self._writer.delete_documents(plan.deleted, chunk_separator=docs.CHUNK_SEPARATOR)
        if plan.rows:
            self._writer.write(vector_batch(plan.rows, source="embed stream"))
            # A changed document with fewer chunks than before: its last chunks' rows go.
            removed += self._writer.delete_documents(
                plan.upserted, keep_ids=[r.id for r in plan.rows], chunk_separator=docs.CHUNK_SEPARATOR
            )
        record_versions(self._writer, versions)
        self._upserted.inc(len(plan.upserted))
        self._deleted.inc(len(plan.deleted))
        self._rows_written.inc(len(plan.rows))
        self._rows_deleted.inc(removed)
        log.info(
            "window %s: upserted %d documents (%d rows), deleted %d documents (%d rows removed), %d stale",
            window,
            len(plan.upserted),
            len(plan.rows),
            len(plan.deleted),
            removed,
            len(dead),
        )
        yield {"upserted": plan.upserted, "deleted": plan.deleted, "rows": len(plan.rows), "rows_removed": removed}


__all__ = ["WriteChanges"]
