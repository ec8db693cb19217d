"""Fakes of BigQuery and Vertex AI Vector Search that apply what they are asked to in-memory tables, so a
test sees the rows a run leaves (neither service is reachable here)."""

import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq

_MERGE = re.compile(
    r"^MERGE `(?P<target>[^`]+)` T USING `(?P<source>[^`]+)` S ON T\.id = S\.id\n(?P<clauses>.*)$", re.S
)
_CLAUSE = re.compile(
    r"^WHEN (MATCHED|NOT MATCHED|NOT MATCHED BY TARGET|NOT MATCHED BY SOURCE) THEN (UPDATE|INSERT|DELETE)\b"
)


class Conflict(Exception):
    """What the client raises when a table to create exists already."""


class FakeBigQuery:
    """Tables of rows by id. Knows the statements upload_to_bigquery sends; anything else is an error.

    `barrier`: a `threading.Barrier` every load waits at, so concurrent runs are all loading at once.
    `fail_merge`: the MERGE job fails (as a quota or permission error would).
    """

    def __init__(self, *, barrier=None, fail_merge=False):
        self.tables: dict[str, dict[str, dict]] = {}
        self.created, self.dropped, self.loaded, self.loaded_tables, self.queries = [], [], [], [], []
        self.barrier, self.fail_merge = barrier, fail_merge
        self.lock = threading.Lock()

    def create_table(self, table, exists_ok=False):
        name = f"{table.project}.{table.dataset_id}.{table.table_id}"
        with self.lock:
            if name in self.tables and not exists_ok:
                raise Conflict(f"Already Exists: Table {name}")
            self.tables.setdefault(name, {})
            self.created.append((name, table.expires))
        return table

    def load_table_from_file(self, handle, table_id, job_config, location=None):
        arrow = pq.read_table(handle)
        rows = arrow.to_pylist()
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        with self.lock:
            if table_id not in self.tables:
                raise KeyError(f"Not found: Table {table_id}")
            if job_config.write_disposition == "WRITE_EMPTY" and self.tables[table_id]:
                raise Conflict(f"{table_id} is not empty (WRITE_EMPTY)")
            self.tables[table_id] = {row["id"]: row for row in rows}
            self.loaded.append((table_id, job_config))
            self.loaded_tables.append(arrow)
        return SimpleNamespace(result=lambda: None, job_id=f"load-{len(self.loaded)}")

    def query(self, sql, location=None):
        with self.lock:
            self.queries.append(sql)
            created = re.match(r"^CREATE TABLE IF NOT EXISTS `([^`]+)` \(", sql)
            if created:
                self.tables.setdefault(created[1], {})
                return SimpleNamespace(result=lambda: None, job_id="ddl", dml_stats=None)
            merge = _MERGE.match(sql)
            if not merge:
                raise ValueError(f"the fake does not know this statement: {sql[:80]!r}")
            if self.fail_merge:
                raise RuntimeError("403 Quota exceeded")
            return self._merge(merge["target"], merge["source"], merge["clauses"].splitlines())

    def _merge(self, target_id, source_id, clauses):
        actions = {}
        for clause in clauses:
            match = _CLAUSE.match(clause)
            assert match, clause
            actions[match[1].replace(" BY TARGET", "")] = match[2]
        target, source = self.tables[target_id], self.tables[source_id]
        merged = dict(target)
        counts = dict.fromkeys(("inserted", "updated", "deleted"), 0)
        for ident, row in source.items():
            if ident in target and actions.get("MATCHED") == "UPDATE":
                merged[ident] = {**row, "metadata": json.loads(row["metadata"]) if row["metadata"] else None}
                counts["updated"] += 1
            elif ident not in target and actions.get("NOT MATCHED") == "INSERT":
                merged[ident] = {**row, "metadata": json.loads(row["metadata"]) if row["metadata"] else None}
                counts["inserted"] += 1
        if actions.get("NOT MATCHED BY SOURCE") == "DELETE":
            for ident in set(target) - set(source):
                del merged[ident]
                counts["deleted"] += 1
        self.tables[target_id] = merged  # one statement: all of it or nothing
        stats = SimpleNamespace(**{f"{name}_row_count": value for name, value in counts.items()})
        return SimpleNamespace(result=lambda: None, job_id="merge", dml_stats=stats)

    def delete_table(self, table_id, not_found_ok=False):
        with self.lock:
            if table_id not in self.tables and not not_found_ok:
                raise KeyError(f"Not found: Table {table_id}")
            self.tables.pop(table_id, None)
            self.dropped.append(table_id)


class FakeIndexes:
    """Vector Search indexes (datapoints by id, per index name); `index_class` is the SDK class stand-in.

    A batch update reads a local contents folder as Vector Search does: `*.json` datapoint files directly
    in it, ids to delete in `delete/`, any other folder refused.
    """

    def __init__(self):
        self.points: dict[str, dict[str, dict]] = {}
        self.calls = []
        fake = self

        class Index:
            def __init__(self, index_name):
                self.name = index_name
                fake.points.setdefault(index_name, {})

            def update_embeddings(self, contents_delta_uri, is_complete_overwrite=None):
                fake.calls.append(("update_embeddings", contents_delta_uri, is_complete_overwrite))
                fake.batch_update(self.name, Path(contents_delta_uri), bool(is_complete_overwrite))
                return self

            def upsert_datapoints(self, datapoints, update_mask=None):
                fake.calls.append(("upsert_datapoints", [d.datapoint_id for d in datapoints]))
                for d in datapoints:
                    fake.points[self.name][d.datapoint_id] = {
                        "id": d.datapoint_id,
                        "embedding": list(d.feature_vector),
                    }
                return self

            def remove_datapoints(self, datapoint_ids):
                fake.calls.append(("remove_datapoints", list(datapoint_ids)))
                for ident in datapoint_ids:
                    fake.points[self.name].pop(ident, None)
                return self

        self.index_class = Index

    def batch_update(self, name, folder: Path, overwrite: bool):
        others = [p.name for p in folder.iterdir() if p.is_dir() and p.name != "delete"]
        assert not others, f"Vector Search refuses sub-folders of the contents folder: {others}"
        records = {}
        for path in sorted(folder.glob("*.json")):
            for line in path.read_text().splitlines():
                point = json.loads(line)
                records[point["id"]] = point
        deleted = set()
        for path in sorted((folder / "delete").glob("*")) if (folder / "delete").is_dir() else []:
            deleted |= set(path.read_text().split())
        points = {} if overwrite else dict(self.points[name])
        points.update(records)
        for ident in deleted:
            points.pop(ident, None)
        self.points[name] = points
