"""BigQuery target: a load job from Parquet into a staging table, then a MERGE into the target (one row per id).

The embedding column is `FLOAT64 REPEATED` (what `VECTOR_SEARCH` and `ML.DISTANCE` take), metadata is
`JSON`. Tested against a fake client only: it has not been run against BigQuery.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from embedpipe.vectorstore.rows import VectorBatch, validate_batch

_TABLE_ID = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]{0,1023}\.[A-Za-z_][A-Za-z0-9_]{0,1023}$")


def check_table_id(table_id: str) -> str:
    if not _TABLE_ID.match(table_id or ""):
        raise ValueError(f"BigQuery table {table_id!r} must look like project.dataset.table (letters, digits, '_')")
    return table_id


def bigquery_schema():
    from google.cloud import bigquery

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


def merge_sql(table_id: str, staging_id: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS `{table_id}` (id STRING NOT NULL, embedding ARRAY<FLOAT64>, content STRING, metadata JSON);\n"
        f"MERGE `{table_id}` T USING `{staging_id}` S ON T.id = S.id\n"
        "WHEN MATCHED THEN UPDATE SET embedding = S.embedding, content = S.content, metadata = SAFE.PARSE_JSON(S.metadata)\n"
        "WHEN NOT MATCHED THEN INSERT (id, embedding, content, metadata) "
        "VALUES (S.id, S.embedding, S.content, SAFE.PARSE_JSON(S.metadata));\n"
        f"DROP TABLE `{staging_id}`;"
    )


@dataclass
class BigQueryUpload:
    table_id: str
    staging_id: str
    rows: int
    load_job_id: str
    query_job_id: str


def upload_to_bigquery(
    batch: VectorBatch, table_id: str, *, client=None, location: str | None = None
) -> BigQueryUpload:
    """Loads `batch` into `project.dataset.table` (created if missing), upserting by id.

    Args:
        batch: Checked rows.
        table_id: `project.dataset.table`.
        client: A `bigquery.Client` (tests pass a fake).
        location: BigQuery location for the jobs.
    """
    from google.cloud import bigquery

    check_table_id(table_id)
    validate_batch(batch)
    client = client or bigquery.Client(project=table_id.split(".")[0])
    staging_id = f"{table_id}_staging"
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        schema=bigquery_schema(),
    )
    parquet_options = bigquery.ParquetOptions()  # the property returns a copy: set it whole
    parquet_options.enable_list_inference = True
    config.parquet_options = parquet_options
    with tempfile.TemporaryDirectory() as folder:
        path = write_bigquery_parquet(batch, Path(folder) / "vectors.parquet")
        with open(path, "rb") as handle:
            load = client.load_table_from_file(handle, staging_id, job_config=config, location=location)
            load.result()
    query = client.query(merge_sql(table_id, staging_id), location=location)
    query.result()
    return BigQueryUpload(table_id, staging_id, len(batch), getattr(load, "job_id", ""), getattr(query, "job_id", ""))
