"""`embedpipe upload VECTORS`: Parquet vectors into a target, as the `upload_vectors` component writes them.

The same targets (postgres, alloydb, cloudsql, bigquery, vertex_vector_search), the same run meaning
(`--write-mode append|snapshot`) and the same checks, through `embedpipe.vectorstore.upload.upload_vectors`;
a password in clear in `--db` is refused before anything runs (`embedpipe.cli.main`) and the summary shows
the database redacted.
"""

from __future__ import annotations

import argparse

from embedpipe.cli import exits
from embedpipe.cli.commands import add_command_parser
from embedpipe.cli.console import configure_logging
from embedpipe.write_modes import WRITE_MODES

#: `embedpipe.vectorstore.upload.TARGETS`, spelled out so building the parser imports no database driver.
TARGETS = ("postgres", "alloydb", "cloudsql", "bigquery", "vertex_vector_search")


def cmd_upload(args: argparse.Namespace) -> int:
    """`embedpipe upload`: writes a vectors file or folder into the target and prints what it did.

    Args:
        args: the parsed `upload` arguments.

    Returns:
        The exit status, `exits.OK`. A bad file, value or row, and a database that refuses or cannot be reached (after
        the writer's retries), raise a ValueError, which `embedpipe.cli.main` answers with `exits.BAD_INPUT` and the reason.
    """
    from embedpipe.vectorstore.postgres import IndexSettings
    from embedpipe.vectorstore.upload import UploadConfig, upload_vectors

    configure_logging()
    config = UploadConfig(
        target=args.target,
        database_uri=args.db or "",
        instance=args.instance,
        database=args.database,
        user=args.user,
        password_env=args.password_env,
        password_secret=args.password_secret,
        iam_auth=args.iam_auth,
        ip_type=args.ip_type,
        table=args.table,
        index=IndexSettings(kind=args.index_kind, metric=args.index_metric),
        vector_search_index=args.vector_search_index,
        contents_delta_uri=args.contents_delta_uri,
        vector_search_update_method=args.vector_search_update_method,
        vector_search_previous_ids=args.vector_search_previous_ids,
        write_mode=args.write_mode,
    )
    summary = upload_vectors(args.vectors, config)
    print(summary.markdown(), end="")
    return exits.OK


def add_upload_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe upload`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    upload = add_command_parser(
        sub,
        "upload",
        description="Writes Parquet vectors (a file, or a folder of vectors-*.parquet shards) into a vector "
        "database, as the upload_vectors component does: every row checked first, one transaction for Postgres.",
    )
    upload.add_argument("vectors", help="Parquet file or folder of vectors-*.parquet shards (id, embedding, ...)")
    upload.add_argument(
        "--target",
        choices=TARGETS,
        default="postgres",
        help="where the vectors go: PostgreSQL + pgvector (a URI, or the embedded one), AlloyDB, Cloud SQL, "
        "BigQuery or Vertex AI Vector Search (default: %(default)s)",
    )
    upload.add_argument(
        "--db", help="Postgres URI without a password (target postgres; default: the embedded database)"
    )
    upload.add_argument(
        "--table",
        default="embeddings",
        help="Postgres table or schema.table; BigQuery project.dataset.table (default: %(default)s)",
    )
    upload.add_argument(
        "--write-mode",
        choices=WRITE_MODES,
        default="append",
        help="append: upsert, the table's other rows stay (default); snapshot: the vectors are the whole corpus, "
        "rows whose id is not among them are deleted in the same transaction",
    )
    cloud = upload.add_argument_group("AlloyDB / Cloud SQL")
    cloud.add_argument(
        "--instance", default="", help="projects/P/locations/L/clusters/C/instances/I or project:region:instance"
    )
    cloud.add_argument("--database", default="postgres", help="database name (default: %(default)s)")
    cloud.add_argument(
        "--user",
        default="postgres",
        help="database user; with --iam-auth the service account e-mail without .gserviceaccount.com "
        "(default: %(default)s)",
    )
    cloud.add_argument("--password-env", default="", help="name of an environment variable holding the password")
    cloud.add_argument("--password-secret", default="", help="Secret Manager secret holding the password")
    cloud.add_argument("--iam-auth", action="store_true", help="IAM database authentication instead of a password")
    cloud.add_argument(
        "--ip-type",
        choices=("PRIVATE", "PUBLIC", "PSC"),
        default="PRIVATE",
        help="how the connector reaches the instance: private IP, public IP or Private Service Connect "
        "(default: %(default)s)",
    )
    index = upload.add_argument_group("pgvector index (built when the table has none)")
    index.add_argument(
        "--index-kind",
        choices=("hnsw", "ivfflat", "none"),
        default="hnsw",
        help="pgvector index type; none: no index, every search exact (default: %(default)s)",
    )
    index.add_argument(
        "--index-metric",
        choices=("cosine", "ip", "l2"),
        default="cosine",
        help="the distance the index serves; search with the same --metric (default: %(default)s)",
    )
    search = upload.add_argument_group("Vertex AI Vector Search")
    search.add_argument("--vector-search-index", default="", help="projects/P/locations/L/indexes/ID")
    search.add_argument(
        "--contents-delta-uri", default="", help="folder for the datapoint files (update method batch); gs:// or local"
    )
    search.add_argument(
        "--vector-search-update-method",
        choices=("batch", "stream"),
        default="batch",
        help="as the index was created: BATCH_UPDATE (files + update_embeddings) or STREAM_UPDATE (default: batch)",
    )
    search.add_argument(
        "--vector-search-previous-ids",
        default="",
        help="the previous run's id listing (<its contents folder>.ids.jsonl); needed by a streamed snapshot",
    )
    upload.set_defaults(func=cmd_upload)
