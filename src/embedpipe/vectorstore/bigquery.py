"""BigQuery target: a load job from Parquet into a staging table of this run, then one MERGE into the target.

The embedding column is `FLOAT64 REPEATED` (what `VECTOR_SEARCH` and `ML.DISTANCE` take), metadata is
`JSON`. Each run loads into its own staging table (`<table>_staging_<time>_<random>`, created with an
expiration so a crashed run leaves nothing for good, dropped after the MERGE), so two runs into one table
never share one. The MERGE is one statement, so it is all or nothing: with `write_mode="snapshot"` it also
deletes the rows whose ids are not in the batch (`WHEN NOT MATCHED BY SOURCE THEN DELETE`); with
`"append"` it only upserts. The counts come from the query job's DML statistics.

Tested against a fake client that runs the MERGE's meaning on in-memory tables: it has not been run
against BigQuery.
"""

from __future__ import annotations

import datetime
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from embedpipe.vectorstore.rows import VectorBatch, validate_batch
from embedpipe.write_modes import check_write_mode

_TABLE_ID = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]{0,1023}\.[A-Za-z_][A-Za-z0-9_]{0,1023}$")
#: How long a staging table outlives a run that could not drop it.
STAGING_EXPIRATION = datetime.timedelta(days=1)


def check_table_id(table_id: str) -> str:
    if not _TABLE_ID.match(table_id or ""):
        raise ValueError(f"BigQuery table {table_id!r} must look like project.dataset.table (letters, digits, '_')")
    return table_id


def staging_table_id(table_id: str, *, now: datetime.datetime | None = None) -> str:
    """A staging table of its own for one run: `<table>_staging_<UTC time>_<random>`, in the target's dataset."""
    now = now or datetime.datetime.now(datetime.UTC)
    suffix = f"_staging_{now:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"
    project, dataset, table = check_table_id(table_id).split(".")
    return f"{project}.{dataset}.{table[: 1024 - len(suffix)]}{suffix}"


def bigquery_schema():
    from embedpipe.extras import require

    bigquery = require("google.cloud.bigquery", "cloud", "the BigQuery target")

    return [
        bigquery.SchemaField("id", "STRING", mode="REQUIRED"),
        bigquery.SchemaField("embedding", "FLOAT64", mode="REPEATED"),
        bigquery.SchemaField("content", "STRING"),
        bigquery.SchemaField("metadata", "STRING"),
    ]


def write_bigquery_parquet(batch: VectorBatch, path: str | Path) -> Path:
    """Parquet with `embedding` as list<double>, which a load job with list inference makes FLOAT64 REPEATED."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = batch.dimension
    flat = pa.array(batch.embeddings.astype("float64").reshape(-1), pa.float64())
    offsets = pa.array(range(0, len(batch) * dim + 1, dim) if dim else [0] * (len(batch) + 1), pa.int32())
    table = pa.table(
        {
            "id": pa.array(batch.ids, pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, flat),
            "content": pa.array(batch.contents, pa.string()),
            "metadata": pa.array(batch.metadata, pa.string()),
        }
    )
    pq.write_table(table, path)
    return Path(path)


def create_table_sql(table_id: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS `{table_id}` "
        "(id STRING NOT NULL, embedding ARRAY<FLOAT64>, content STRING, metadata JSON)"
    )


def merge_sql(table_id: str, staging_id: str, write_mode: str = "append") -> str:
    """One MERGE statement: upsert by id, and for a snapshot delete the target's rows the batch does not have."""
    check_write_mode(write_mode)
    sql = (
        f"MERGE `{table_id}` T USING `{staging_id}` S ON T.id = S.id\n"
        "WHEN MATCHED THEN UPDATE SET embedding = S.embedding, content = S.content, metadata = SAFE.PARSE_JSON(S.metadata)\n"
        "WHEN NOT MATCHED THEN INSERT (id, embedding, content, metadata) "
        "VALUES (S.id, S.embedding, S.content, SAFE.PARSE_JSON(S.metadata))"
    )
    if write_mode == "snapshot":
        sql += "\nWHEN NOT MATCHED BY SOURCE THEN DELETE"
    return sql


@dataclass
class BigQueryUpload:
    table_id: str
    staging_id: str
    rows: int
    load_job_id: str
    query_job_id: str
    write_mode: str = "append"
    #: inserted / updated / deleted, from the MERGE job's DML statistics (empty when the client has none)
    counts: dict[str, int] = field(default_factory=dict)


def dml_counts(job) -> dict[str, int]:
    """`inserted`, `updated`, `deleted` from a finished query job's DML statistics, {} where it has none."""
    stats = getattr(job, "dml_stats", None)
    if stats is None:
        return {}
    names = {"inserted": "inserted_row_count", "updated": "updated_row_count", "deleted": "deleted_row_count"}
    return {name: int(getattr(stats, attribute, 0) or 0) for name, attribute in names.items()}


def upload_to_bigquery(
    batch: VectorBatch, table_id: str, *, write_mode: str = "append", client=None, location: str | None = None
) -> BigQueryUpload:
    """Loads `batch` into `project.dataset.table` (created if missing) in one MERGE by id.

    Args:
        batch: Checked rows.
        table_id: `project.dataset.table`.
        write_mode: "snapshot" (the batch is the whole table: rows of other ids are deleted in the same
            MERGE) or "append" (upserts only).
        client: A `bigquery.Client` (tests pass a fake).
        location: BigQuery location for the jobs.
    """
    from embedpipe.extras import require

    bigquery = require("google.cloud.bigquery", "cloud", "the BigQuery target")

    check_table_id(table_id)
    merge_sql(table_id, "staging", write_mode)  # checks write_mode before anything is written
    validate_batch(batch)
    if write_mode == "snapshot" and not len(batch):
        raise ValueError(
            f"write_mode 'snapshot' with no rows would delete every row of BigQuery table {table_id}; refused "
            "(an empty vectors folder or a job that wrote nothing looks like this; write_mode 'append' changes nothing)"
        )
    client = client or bigquery.Client(project=table_id.split(".")[0])
    staging_id = staging_table_id(table_id)
    merge = merge_sql(table_id, staging_id, write_mode)
    staging = bigquery.Table(staging_id, schema=bigquery_schema())
    staging.expires = datetime.datetime.now(datetime.UTC) + STAGING_EXPIRATION
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_EMPTY,  # the run's own table, created empty just now
        schema=bigquery_schema(),
    )
    parquet_options = bigquery.ParquetOptions()  # the property returns a copy: set it whole
    parquet_options.enable_list_inference = True
    config.parquet_options = parquet_options
    client.create_table(staging)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = write_bigquery_parquet(batch, Path(folder) / "vectors.parquet")
            with open(path, "rb") as handle:
                load = client.load_table_from_file(handle, staging_id, job_config=config, location=location)
                load.result()
        client.query(create_table_sql(table_id), location=location).result()
        query = client.query(merge, location=location)
        query.result()
    finally:
        client.delete_table(staging_id, not_found_ok=True)
    return BigQueryUpload(
        table_id,
        staging_id,
        len(batch),
        getattr(load, "job_id", ""),
        getattr(query, "job_id", ""),
        write_mode,
        dml_counts(query),
    )
