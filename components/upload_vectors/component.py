"""upload_vectors: write Parquet vectors into PostgreSQL + pgvector (embedded, AlloyDB, Cloud SQL), BigQuery or Vector Search."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from embedpipe.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def upload_vectors(
    vectors: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    vector_search_contents: Output[Artifact],
    target: str = "postgres",
    database_uri: str = "",
    instance: str = "",
    database: str = "postgres",
    user: str = "postgres",
    password_env: str = "",
    password_secret: str = "",
    iam_auth: bool = False,
    ip_type: str = "PRIVATE",
    table: str = "embeddings",
    index_kind: str = "hnsw",
    index_metric: str = "cosine",
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 64,
    ivfflat_lists: int = 0,
    maintenance_work_mem: str = "1GB",
    vector_search_index: str = "",
    contents_delta_uri: str = "",
    vector_search_update_method: str = "batch",
    vector_search_previous_ids: str = "",
    write_mode: str = "append",
):
    """Writes embedding vectors into a vector database, idempotently (one row per id, latest values);
    with `write_mode="snapshot"` the vectors are the whole truth and the table's other rows are deleted.

    Every row is checked (ids, NaN/inf, dimension, metadata JSON) before anything is written; a
    Postgres upload is one transaction, retried whole when the connection drops.

    Args:
        vectors: Parquet file or folder of `vectors-*.parquet` shards (`id`, `embedding`, `content`, `metadata`).
        target: "postgres" (default), "alloydb", "cloudsql", "bigquery" or "vertex_vector_search".
        database_uri: Postgres URI without a password; "" = the embedded local database (kfp.local runs).
        instance: AlloyDB `projects/P/locations/L/clusters/C/instances/I` or Cloud SQL `project:region:instance`.
        database: Database name (AlloyDB / Cloud SQL).
        user: Database user; with `iam_auth`, the service account e-mail without `.gserviceaccount.com`.
        password_env: Name of an environment variable holding the password (never the password itself).
        password_secret: Secret Manager secret `projects/P/secrets/S[/versions/V]` holding the password.
        iam_auth: IAM database authentication instead of a password (AlloyDB / Cloud SQL).
        ip_type: Instance IP to connect to: "PRIVATE", "PUBLIC" or "PSC".
        table: Postgres `table` or `schema.table`; BigQuery `project.dataset.table`.
        index_kind: "hnsw", "ivfflat" or "none" (built when the table has none).
        index_metric: "cosine", "ip" or "l2".
        hnsw_m: HNSW `m`.
        hnsw_ef_construction: HNSW `ef_construction`.
        ivfflat_lists: IVFFlat lists (0 = rows / 1000).
        maintenance_work_mem: Memory for the index build, for this transaction only.
        vector_search_index: Vector Search index `projects/P/locations/L/indexes/ID` (vertex_vector_search).
        contents_delta_uri: gs:// folder for Vector Search's JSON files (vertex_vector_search); "" = the
            `contents` folder of the `vector_search_contents` output (under the pipeline root).
        vector_search_update_method: "batch" (files + `update_embeddings`; a snapshot is a complete overwrite)
            or "stream" (`upsert_datapoints`; a snapshot also `remove_datapoints` the ids the previous listing
            has and this run lacks), as the index was created (BATCH_UPDATE / STREAM_UPDATE).
        vector_search_previous_ids: The previous run's id listing (`<its contents_delta_uri>.ids.jsonl`, e.g.
            the `vector_search_contents` output of the previous run + `/contents.ids.jsonl`); required for a
            streamed snapshot, and gives the inserted/updated/deleted counts.
        write_mode: What the run means for the rows it does not name. "append" (default): upsert, the
            table's other rows stay. "snapshot": the vectors are the whole corpus; rows whose id is not
            among them (removed documents, chunks past the end of a document edited shorter) are deleted:
            in the same transaction as the upserts, under the table's exclusive lock (postgres, alloydb,
            cloudsql), in the MERGE (bigquery), as `vector_search_update_method` says (vertex_vector_search).
            A snapshot of no vectors is refused rather than emptying the table.

    Returns:
        metrics: rows, inserted, updated, unchanged, deleted, seconds, rows_per_second, attempts (those the
            target can tell: BigQuery from the MERGE's DML statistics, Vector Search against the previous listing).
        report: Markdown summary (write mode and the counts) with how to query the table (psql / embedpipe search).
        vector_search_contents: vertex_vector_search with `contents_delta_uri` "" only: `contents/` (the
            datapoint files) and `contents.ids.jsonl` (the ids the index holds after the run).
    """
    from embedpipe.reports import log_metrics
    from embedpipe.vectorstore.postgres import IndexSettings
    from embedpipe.vectorstore.upload import UploadConfig
    from embedpipe.vectorstore.upload import upload_vectors as upload

    index = IndexSettings(index_kind, index_metric, hnsw_m, hnsw_ef_construction, ivfflat_lists, maintenance_work_mem)
    config = UploadConfig(
        target,
        database_uri,
        instance,
        database,
        user,
        password_env,
        password_secret,
        iam_auth,
        ip_type,
        table,
        index,
        vector_search_index,
        contents_delta_uri or vector_search_contents.uri.rstrip("/") + "/contents",
        vector_search_update_method=vector_search_update_method,
        vector_search_previous_ids=vector_search_previous_ids,
        write_mode=write_mode,
    )
    summary = upload(vectors.path, config)
    log_metrics(metrics, summary.metrics)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(summary.markdown())
