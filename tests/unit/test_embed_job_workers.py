"""The embedding job on two worker processes (Beam's local runner, multi-process) writing into one new table.

Both workers load the model and write their share of the rows straight into PostgreSQL through
`embed/sinks.py`, so their first batches race on CREATE TABLE and CREATE INDEX of a table that does not
exist yet: the run must end without an error, and the table must hold every id of the corpus once. (~35 s: the
model is loaded in both worker processes, in each of the two runs.)
"""

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from embedpipe.embed.job import prepare_config, run_job
from embedpipe.embed.settings import ModelSettings
from embedpipe.embed.worker_logs import show_worker_lines

pytestmark = pytest.mark.slow

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini" / "corpus.jsonl"
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


def write_corpus(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in MINI.read_text().splitlines()[:n]]
    rows = [dict(r, text=" ".join(r["text"].split()[:40])) for r in rows]  # short texts: fast to embed
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def table_rows(pg_uri: str, table: str) -> dict[str, str]:
    """id -> content; a duplicate id (impossible with the primary key, checked anyway) fails here."""
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        found = conn.execute(f'SELECT id, content FROM "{table}"').fetchall()
    assert len({i for i, _ in found}) == len(found), "duplicate ids in the table"
    return dict(found)


def write_transactions(pg_uri: str, table: str) -> int:
    """How many transactions wrote the table's live rows (each worker's batch is one)."""
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        return conn.execute(f'SELECT count(DISTINCT xmin::text) FROM "{table}"').fetchone()[0]


def vector_indexes(pg_uri: str, table: str) -> list[str]:
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef ILIKE '%%using hnsw%%'", (table,)
            ).fetchall()
        ]


def test_two_worker_processes_write_one_new_table_without_loss_or_duplicates(tmp_path, pg_uri, caplog):
    # The workers' log lines come back through this logger (an in-process CLI test may have quietened
    # "apache_beam" to WARNING before: `embedpipe.cli.console.configure_logging`).
    caplog.set_level(logging.INFO, logger="apache_beam.runners.portability.local_job_service")
    show_worker_lines()
    table = "two_workers"
    settings = dict(model=ModelSettings(batch_size=4, inference_batch_size=8), database_uri=pg_uri, table=table)
    rows = write_corpus(tmp_path / "corpus.jsonl", 30)
    result = run_job(prepare_config(str(tmp_path / "corpus.jsonl"), str(tmp_path / "run1"), **settings), TWO_WORKERS)
    # Each worker process takes its share of the cores for torch, and says so once; the commands' console
    # shows that line as the worker wrote it (`show_worker_lines`), under the worker's module.
    budget = [r for r in caplog.records if "shared by 2 processes" in r.getMessage()]
    assert len(budget) == 2, "the workers' thread budget was not logged once each"
    assert all(r.name.startswith("worker embedpipe.") and r.getMessage().startswith("torch: ") for r in budget)

    expected = {r["_id"]: r["text"] for r in rows}
    assert table_rows(pg_uri, table) == expected  # no row lost, none twice, each with its own text
    assert sorted(pd.read_parquet(tmp_path / "run1")["id"]) == sorted(expected)
    assert write_transactions(pg_uri, table) >= 2  # the rows came in more than one write: the workers' shares
    assert len(vector_indexes(pg_uri, table)) == 1  # one HNSW index, not one per worker
    assert result.metrics["documents_embedded"] == len(rows)

    # Second run on two workers: 3 documents removed, 2 edited, 2 new; deletes and upserts meet in the table.
    kept = rows[3:]
    kept[0] = dict(kept[0], text="an edited text about protein folding")
    kept[1] = dict(kept[1], text="another edited text about cell division")
    new = [dict(rows[0], _id="new-1", text="a new document"), dict(rows[1], _id="new-2", text="one more")]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept + new))
    run_job(
        prepare_config(
            str(tmp_path / "corpus.jsonl"), str(tmp_path / "run2"), previous=str(tmp_path / "run1"), **settings
        ),
        TWO_WORKERS,
    )
    assert table_rows(pg_uri, table) == {r["_id"]: r["text"] for r in kept + new}
