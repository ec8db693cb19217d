"""`upload_vectors`: a Parquet vectors file or folder into one target. What the component and `embedpipe run` call.

Example:
    >>> from embedpipe.vectorstore.upload import UploadConfig, upload_vectors     # doctest: +SKIP
    >>> summary = upload_vectors("runs/x/vectors", UploadConfig(table="scifact"))  # doctest: +SKIP
    >>> print(summary.markdown())                                                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from embedpipe.vectorstore.connections import ConnectionSettings
from embedpipe.vectorstore.conninfo import check_no_password, parse_connection_string
from embedpipe.vectorstore.postgres import IndexSettings, PgVectorWriter
from embedpipe.vectorstore.rows import read_parquet_vectors, validate_batch
from embedpipe.vectorstore.snapshot import check_write
from embedpipe.write_modes import check_write_mode

TARGETS = ("postgres", "alloydb", "cloudsql", "bigquery", "vertex_vector_search")


@dataclass
class UploadConfig:
    """Where the vectors go.

    Attributes:
        target: "postgres" (default), "alloydb", "cloudsql", "bigquery" or "vertex_vector_search".
        database_uri: Postgres URI for "postgres"; "" = the embedded database (local runs).
        instance: AlloyDB instance path or Cloud SQL `project:region:instance`.
        database, user: Database and user (AlloyDB / Cloud SQL).
        password_env, password_secret: Where the password is (env variable name / Secret Manager secret).
        iam_auth: IAM database authentication (AlloyDB / Cloud SQL).
        ip_type: "PRIVATE", "PUBLIC" or "PSC".
        table: Postgres `table` / `schema.table`, or BigQuery `project.dataset.table`.
        index: The pgvector index built when missing.
        vector_search_index: Vertex AI Vector Search index resource name.
        contents_delta_uri: gs:// folder for the Vector Search JSON files; the run's id listing goes beside it.
        vector_search_update_method: "batch" (update_embeddings from the files) or "stream" (upsert_datapoints).
        vector_search_previous_ids: The previous run's id listing (`<its contents_delta_uri>.ids.jsonl`): a
            streamed snapshot removes its ids that this run lacks (`vectorstore.vector_search`).
        allow_password_in_uri: False for pipeline parameters: a URI with a password in clear is refused.
        write_mode: "append" (default): upsert, other rows stay. "snapshot": the vectors are the whole
            truth; rows of other ids are deleted (Postgres targets: in the same transaction as the upserts,
            `embedpipe.vectorstore.snapshot`; BigQuery in its MERGE; Vector Search as `vector_search` says).
            A snapshot of no rows is refused.
    """

    target: str = "postgres"
    database_uri: str = ""
    instance: str = ""
    database: str = "postgres"
    user: str = "postgres"
    password_env: str = ""
    password_secret: str = ""
    iam_auth: bool = False
    ip_type: str = "PRIVATE"
    table: str = "embeddings"
    index: IndexSettings = field(default_factory=IndexSettings)
    vector_search_index: str = ""
    contents_delta_uri: str = ""
    vector_search_update_method: str = "batch"
    vector_search_previous_ids: str = ""
    allow_password_in_uri: bool = False
    write_mode: str = "append"

    def check(self) -> UploadConfig:
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not one of {TARGETS}")
        if self.allow_password_in_uri:
            parse_connection_string(self.database_uri, what="database_uri")
        else:
            check_no_password(self.database_uri, what="database_uri")
        self.index.check()
        check_write_mode(self.write_mode)
        if self.target == "vertex_vector_search":
            self.vector_search().check()
        return self

    def vector_search(self):
        from embedpipe.vectorstore.vector_search import VectorSearchSettings

        return VectorSearchSettings(
            self.vector_search_index,
            self.contents_delta_uri,
            self.vector_search_update_method,
            self.write_mode,
            self.vector_search_previous_ids,
        )

    def connection(self, **fakes) -> ConnectionSettings:
        return ConnectionSettings(
            target=self.target,
            uri=self.database_uri,
            instance=self.instance,
            database=self.database,
            user=self.user,
            password_env=self.password_env,
            password_secret=self.password_secret,
            iam_auth=self.iam_auth,
            ip_type=self.ip_type,
            **fakes,
        )


@dataclass
class UploadSummary:
    target: str
    where: str
    table: str
    metrics: dict[str, float]
    connect_hint: str = ""
    write_mode: str = ""

    def markdown(self) -> str:
        lines = ["# upload_vectors\n", f"- target: **{self.target}** ({self.where})", f"- table: `{self.table}`"]
        if self.write_mode:
            lines.append(f"- write mode: **{self.write_mode}**")
        lines += [
            f"- {name}: {value:,}" if isinstance(value, int) else f"- {name}: {value}"
            for name, value in self.metrics.items()
        ]
        if self.connect_hint:
            lines += ["", "Query it:", "", "```", self.connect_hint, "```"]
        return "\n".join(lines) + "\n"


def upload_vectors(vectors_path: str, config: UploadConfig, **fakes) -> UploadSummary:
    """Reads the vectors (file or folder of shards), checks them, and writes them to the configured target.

    Args:
        vectors_path: A Parquet file or a folder of `vectors-*.parquet` shards (`id`, `embedding`, `content`, `metadata`).
        config: The target.
        **fakes: Test doubles: `connector_factory`, `secret_client` (Postgres targets), `bigquery_client`,
            `gcs_client`, `index_class`.

    Returns:
        An UploadSummary: metrics (rows, seconds, rows_per_second; inserted, updated, unchanged and deleted
        where the target can tell) and a Markdown report.
    """
    config.check()
    started = time.monotonic()
    batch = read_parquet_vectors(vectors_path)
    validate_batch(batch)
    if config.target == "bigquery":
        from embedpipe.vectorstore.bigquery import upload_to_bigquery

        done = upload_to_bigquery(
            batch, config.table, write_mode=config.write_mode, client=fakes.get("bigquery_client")
        )
        metrics = {**_metrics(len(batch), time.monotonic() - started), **done.counts}
        return UploadSummary("bigquery", done.load_job_id, config.table, metrics, write_mode=config.write_mode)
    if config.target == "vertex_vector_search":
        from embedpipe.vectorstore.vector_search import upload_to_vector_search

        done = upload_to_vector_search(
            batch, config.vector_search(), gcs_client=fakes.get("gcs_client"), index_class=fakes.get("index_class")
        )
        metrics = {**_metrics(len(batch), time.monotonic() - started), **done.counts}
        where = f"{config.vector_search_index}, {config.vector_search_update_method} update"
        return UploadSummary(
            "vertex_vector_search",
            where,
            done.contents_delta_uri or done.listing,
            metrics,
            write_mode=config.write_mode,
        )

    check_write(config.write_mode, config.table, len(batch))  # before the embedded database starts
    hint = ""
    settings = config.connection(**{k: v for k, v in fakes.items() if k in ("connector_factory", "secret_client")})
    if config.target == "postgres" and not config.database_uri:
        from embedpipe.vectorstore.embedded import embedded_database_uri, psql_command

        settings.uri = embedded_database_uri()
        hint = f'{psql_command(settings.uri)}\nembedpipe search "your question" --table {config.table}'
    factory = settings.connection_factory()
    try:
        result = PgVectorWriter(factory, config.table, index=config.index).write(batch, mode=config.write_mode)
    finally:
        connector = getattr(factory, "connector", None)
        if connector is not None and hasattr(connector, "close"):
            connector.close()
    metrics = result.metrics()
    metrics["seconds"] = round(time.monotonic() - started, 3)  # reading the Parquet files included
    metrics["rows_per_second"] = round(result.rows / metrics["seconds"], 1) if metrics["seconds"] else 0.0
    return UploadSummary(config.target, settings.describe(), config.table, metrics, hint, config.write_mode)


def _metrics(rows: int, seconds: float) -> dict[str, float]:
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds else 0.0,
    }
