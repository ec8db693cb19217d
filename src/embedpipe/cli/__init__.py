"""The `embedpipe` command.

embedpipe run                 # the whole pipeline locally (kfp.local) on the example data
embedpipe prepare --data DIR  # data preparation alone, straight from the library
embedpipe fine-tune --data DIR --output-dir OUT  # fine-tune the base model on the train labels
embedpipe embed --input corpus.jsonl --output vectors/  # the Beam embedding job alone
embedpipe embed-stream --messages examples/stream/changes.jsonl --table docs  # the streaming job (Pub/Sub on Dataflow; alias: stream)
embedpipe upload vectors/ --table T  # Parquet vectors into the vector database (--write-mode snapshot|append)
embedpipe search "some text"  # top-k from the vector database (default: the embedded one)
embedpipe db                  # start the embedded PostgreSQL + pgvector, print how to connect
"""

# The commands live in modules by what they are about, each registering its subcommands with their `cmd_*`
# functions: `data` (prepare, evaluate, fine-tune: the library on a BEIR folder), `pipeline` (run with
# kfp.local, submit to Vertex), `embed` (the Beam jobs: embed, embed-stream), `upload` (Parquet vectors into a
# target) and `serving` (serve, search, db); `common` holds what several share. Heavy imports stay inside the
# functions, so `--help` is quick.

from __future__ import annotations

import argparse
import sys

from embedpipe.cli import data, embed, pipeline, serving, upload


def build_parser() -> argparse.ArgumentParser:
    """The `embedpipe` parser, its subcommands in the order `embedpipe --help` lists them.

    Returns:
        The parser; each subcommand sets `func`, the `cmd_*` function that runs it.
    """
    from embedpipe import __version__

    parser = argparse.ArgumentParser(
        prog="embedpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"embedpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    pipeline.add_run_parser(sub)
    data.add_prepare_parser(sub)
    pipeline.add_submit_parser(sub)
    embed.add_embed_parser(sub)
    embed.add_stream_parser(sub)
    data.add_evaluate_parser(sub)
    data.add_fine_tune_parser(sub)
    serving.add_serve_parser(sub)
    upload.add_upload_parser(sub)
    serving.add_search_parser(sub)
    serving.add_db_parser(sub)
    return parser


#: The flags that take a Postgres connection string (`run`, `embed`, `embed-stream`: --database-uri; `search`,
#: `upload`: --db).
CONNECTION_FLAGS = ("database_uri", "db")


def _refuse_passwords(args: argparse.Namespace) -> None:
    """Refuses a connection flag of `args` that carries a password in clear (never echoing it)."""
    from embedpipe.vectorstore.conninfo import check_no_password

    for flag in CONNECTION_FLAGS:
        value = getattr(args, flag, None)
        if isinstance(value, str) and value:
            check_no_password(value, what="--" + flag.replace("_", "-"))


def _connection_flags(argv: list[str]) -> argparse.Namespace:
    """The connection flags alone, read from the raw arguments before the parser is built (building it
    imports Beam for `embed`/`stream`: seconds); `main` checks the parsed flags again (abbreviations)."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in CONNECTION_FLAGS:
        early.add_argument("--" + flag.replace("_", "-"), dest=flag, default="")
    return early.parse_known_args(argv)[0]


def main(argv: list[str] | None = None) -> int:
    """Runs one `embedpipe` command: the console script `embedpipe` and `python -m embedpipe.cli`.

    Args:
        argv: the arguments after `embedpipe` (default: `sys.argv[1:]`).

    Returns:
        The command's exit status; 2, with the reason on stderr, when the data, a file or a value is wrong
        (argparse also exits with 2 on a bad flag).
    """
    from embedpipe.cli import exits
    from embedpipe.extras import MissingExtra
    from embedpipe.vectorstore.conninfo import ConnectionConfigError

    try:
        _refuse_passwords(_connection_flags(sys.argv[1:] if argv is None else argv))
    except ConnectionConfigError as err:
        print(f"embedpipe: {err}", file=sys.stderr)
        return 2
    except MissingExtra as err:  # a connection flag without psycopg (the `local` extra): nothing can connect
        print(f"embedpipe: {err}", file=sys.stderr)
        return exits.MISSING
    from embedpipe.models import check_open_model
    from embedpipe.validation import DataValidationError

    args = build_parser().parse_args(argv)
    try:
        for flag in ("model", "tuned_model"):  # a Vertex AI model id is answered before any work
            if isinstance(getattr(args, flag, None), str):
                check_open_model(getattr(args, flag), parameter="--" + flag.replace("_", "-"))
        _refuse_passwords(args)  # a password in clear is refused before any work, never echoed
        return args.func(args)
    except MissingExtra as err:  # an optional package this command needs: the message is its pip line
        print(f"embedpipe {args.command}: {err}", file=sys.stderr)
        return exits.MISSING
    except (DataValidationError, FileNotFoundError, ValueError) as err:  # ModelLoadError is a ValueError
        print(f"embedpipe {args.command}: {err}", file=sys.stderr)
        return 2
