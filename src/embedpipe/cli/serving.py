"""Using what the pipeline made: `embedpipe serve` (a model endpoint), `embedpipe search` and `embedpipe db`.

`search` and `db` default to the embedded PostgreSQL + pgvector (`embedpipe.vectorstore.embedded`), started
when needed, so they work on one laptop with no setup.
"""

from __future__ import annotations

import argparse

from embedpipe.cli import exits
from embedpipe.cli.commands import add_command_parser
from embedpipe.cli.common import add_task_type_argument, key_values


def cmd_serve(args: argparse.Namespace) -> int:
    """`embedpipe serve`: a textembedding-gecko compatible :predict endpoint for a model, until interrupted.

    Args:
        args: the parsed `serve` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from embedpipe.serving import ServingLimits, serve

    limits = ServingLimits.from_arguments(args)
    serve(args.model, host=args.host, port=args.port, hf_token_secret=args.hf_token_secret, limits=limits)
    return exits.OK


def cmd_search(args: argparse.Namespace) -> int:
    """`embedpipe search`: prints the top-k rows of the vector table for a text, as lines or as JSON.

    Args:
        args: the parsed `search` arguments.

    Returns:
        The exit status, `exits.OK` (also when nothing matched).
    """
    from embedpipe.vectorstore.embedded import embedded_database_uri
    from embedpipe.vectorstore.filters import parse_filter
    from embedpipe.vectorstore.hybrid import SearchSettings
    from embedpipe.vectorstore.search import search_text

    settings = SearchSettings(args.mode, args.metric, rrf_k=args.rrf_k, vector_depth=args.depth, text_depth=args.depth)
    settings.check()  # before the database starts
    where = key_values(args.where, "--where")
    tree = parse_filter(args.filter) if args.filter is not None else None  # a bad filter: before any work
    uri = args.db or embedded_database_uri(args.pgdata)
    hits = search_text(
        uri,
        args.query,
        table=args.table,
        model=args.model,
        task_type=args.task_type,
        k=args.k,
        where=where,
        metric=args.metric,
        filter=tree,
        mode=settings,
    )
    if args.json:
        import json

        print(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False))
        return exits.OK
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        content = " ".join((hit.content or "").split())
        print(f"{rank:>2}. {hit.score:.4f}  {hit.id}  {content[:100]}{'...' if len(content) > 100 else ''}")
    return exits.OK


def cmd_db(args: argparse.Namespace) -> int:
    """`embedpipe db`: starts the embedded database and prints how to connect, or stops it with --stop.

    Args:
        args: the parsed `db` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from embedpipe.vectorstore.embedded import embedded_database_uri, stop_embedded_database

    if args.stop:
        print("stopped" if stop_embedded_database(args.pgdata) else "not running")
        return exits.OK
    embedded_database_uri(args.pgdata, announce=True)
    return exits.OK


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe serve`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    serve = add_command_parser(sub, "serve")
    serve.add_argument(
        "--model",
        help="model folder, gs:// folder, hub id or 'default' (default: $AIP_STORAGE_URI or the packaged MiniLM)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 in a container)"
    )
    serve.add_argument("--port", type=int, help="port (default: $AIP_HTTP_PORT or 8080)")
    serve.add_argument(
        "--hf-token-secret",
        help="Secret Manager secret version (projects/P/secrets/S/versions/V) holding a Hugging Face token for a "
        "gated model (default: $EMBEDPIPE_HF_TOKEN_SECRET)",
    )
    from embedpipe.serving.limits import ServingLimits  # the standard library only

    ServingLimits.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe search`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    search = add_command_parser(sub, "search")
    search.add_argument("query", help="the text to search for")
    search.add_argument("--db", help="Postgres URI (default: the embedded database, started if needed)")
    search.add_argument("--pgdata", help="embedded database folder (default: $EMBEDPIPE_PGDATA or .embedpipe/pg)")
    search.add_argument("--table", default="embeddings", help="table of vectors to search (default: %(default)s)")
    search.add_argument(
        "--model", default="default", help="the model the corpus was embedded with (default: %(default)s)"
    )
    add_task_type_argument(search, "RETRIEVAL_QUERY", "the query prompt")
    search.add_argument("-k", type=int, default=5, help="how many results (default: %(default)s)")
    search.add_argument(
        "--filter",
        metavar="FILTER",
        help="only rows whose metadata matches, e.g. \"year >= 2020 and source in ('pubmed', 'pmc')\" "
        "(=, !=, <, <=, >, >=, in, and, or, parentheses; 'text', numbers, dates 2024-05-01, true/false/null)",
    )
    search.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="only rows with metadata KEY equal to VALUE, as text or as a number (repeatable; combined with "
        "--filter by 'and')",
    )
    search.add_argument(
        "--metric",
        default="cosine",
        choices=["cosine", "ip", "l2"],
        help="vector distance: cosine, inner product (ip) or Euclidean (l2); the table's index serves its own "
        "(default: %(default)s)",
    )
    search.add_argument(
        "--mode",
        default="vector",
        choices=["vector", "text", "hybrid"],
        help="vector: nearest embeddings; text: full-text search (no model loaded); hybrid: both, fused by "
        "reciprocal rank fusion (default: %(default)s)",
    )
    search.add_argument("--rrf-k", type=int, default=20, help="hybrid: the fusion's constant (default: %(default)s)")
    search.add_argument(
        "--depth", type=int, default=100, help="hybrid: rows each ranking contributes (default: %(default)s)"
    )
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(func=cmd_search)


def add_db_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe db`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    db = add_command_parser(sub, "db")
    db.add_argument("--pgdata", help="its data folder (default: $EMBEDPIPE_PGDATA or .embedpipe/pg)")
    db.add_argument("--stop", action="store_true", help="stop it instead")
    db.set_defaults(func=cmd_db)
