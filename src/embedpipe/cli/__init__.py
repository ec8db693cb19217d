"""The `embedpipe` command.

embedpipe run                 # the whole pipeline locally (kfp.local) on the example data
embedpipe prepare --data DIR  # data preparation alone, straight from the library
embedpipe submit build/pipelines/tune_and_index.yaml --project P --pipeline-root gs://B/root  # to Vertex AI Pipelines
embedpipe embed --input corpus.jsonl --output vectors/  # the Beam embedding job alone
embedpipe embed-stream --messages examples/stream/changes.jsonl --table docs  # the streaming job (Pub/Sub on Dataflow; alias: stream)
embedpipe evaluate --data DIR --tuned-model OUT/model  # NDCG@10 etc., base vs tuned, with an HTML report
embedpipe fine-tune --data DIR --output-dir OUT  # fine-tune the base model on the train labels
embedpipe serve --model OUT/model  # a textembedding-gecko compatible :predict endpoint
embedpipe upload vectors/ --table T  # Parquet vectors into the vector database (--write-mode snapshot|append)
embedpipe search "some text"  # top-k from the vector database (default: the embedded one)
embedpipe db                  # start the embedded PostgreSQL + pgvector, print how to connect (--stop stops it)

`embedpipe COMMAND --help` lists a command's options.
"""

# The commands live in modules by what they are about, each registering its subcommands with their `cmd_*`
# functions: `data` (prepare, evaluate, fine-tune: the library on a BEIR folder), `pipeline` (run with
# kfp.local, submit to Vertex), `embed` (the Beam jobs: embed, embed-stream), `upload` (Parquet vectors into a
# target) and `serving` (serve, search, db); `common` holds what several share, `commands` the table of them
# all. Only the parser of the command the line names is built (the `embed` ones import Beam: seconds), and
# heavy imports stay inside the `cmd_*` functions, so `embedpipe --help` is quick.

from __future__ import annotations

import argparse
import builtins
import sys
from collections.abc import Iterable, Sequence

from embedpipe.cli import exits
from embedpipe.cli.commands import COMMANDS, command_named

#: (module, exception class, exit status) for the errors `main` answers with one line on stderr instead of a
#: traceback; the first match wins. A class is looked up only when its module was imported (an exception of a
#: module never imported cannot have been raised), so answering an error imports nothing.
ERROR_STATUSES = (
    ("embedpipe.extras", "MissingExtra", exits.MISSING),  # an ImportError: the message is its pip line
    ("embedpipe.validation", "DataValidationError", exits.BAD_INPUT),
    ("embedpipe.vectorstore.conninfo", "ConnectionConfigError", exits.BAD_INPUT),
    ("builtins", "FileNotFoundError", exits.BAD_INPUT),
    ("builtins", "ValueError", exits.BAD_INPUT),  # ModelLoadError is a ValueError
)


def _exit_statuses() -> str:
    """The epilog of `embedpipe --help`: every exit status and what it means."""
    return "exit statuses:\n" + "\n".join(f"  {status}  {meaning}" for status, meaning in exits.EXIT_CODES.items())


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `embedpipe` parser, its subcommands in the order `embedpipe --help` lists them.

    Args:
        commands: the commands (names or aliases) whose parsers are built with all their options; the others
            are listed with their one-line summary only. None (the default): every command's.

    Returns:
        The parser; each fully built subcommand sets `func`, the `cmd_*` function that runs it.
    """
    from embedpipe import __version__

    parser = argparse.ArgumentParser(
        prog="embedpipe",
        description=__doc__,
        epilog=_exit_statuses(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"embedpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    full = None if commands is None else {command_named(name) for name in commands}
    for command in COMMANDS:
        if full is None or command in full:
            command.add(sub)
        else:
            command.add_stub(sub)
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word not a flag (`embedpipe` itself takes no valued flags)."""
    return next((word for word in argv if not word.startswith("-")), None)


#: The flags that take a Postgres connection string (`run`, `embed`, `embed-stream`: --database-uri; `search`,
#: `upload`, `evaluate`: --db).
CONNECTION_FLAGS = ("database_uri", "db")


def _refuse_passwords(args: argparse.Namespace) -> None:
    """Refuses a connection flag of `args` that carries a password in clear (never echoing it).

    Raises:
        ConnectionConfigError: naming the flag, the connection string redacted.
    """
    values = {flag: getattr(args, flag, None) for flag in CONNECTION_FLAGS}
    if not any(isinstance(value, str) and value for value in values.values()):
        return  # nothing to check: the check's module (and the database driver it brings) is not imported
    from embedpipe.vectorstore.conninfo import check_no_password

    for flag, value in values.items():
        if isinstance(value, str) and value:
            check_no_password(value, what="--" + flag.replace("_", "-"))


def _connection_flags(argv: Sequence[str]) -> argparse.Namespace:
    """The connection flags alone, read from the raw arguments before the parser is built (building the `embed`
    ones imports Beam: seconds); `main` checks the parsed flags again (abbreviations)."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in CONNECTION_FLAGS:
        early.add_argument("--" + flag.replace("_", "-"), dest=flag, default="")
    return early.parse_known_args(list(argv))[0]


def _check_models(args: argparse.Namespace) -> None:
    """A Vertex AI model id in --model or --tuned-model is answered before any work (this is open models only)."""
    from embedpipe.models import check_open_model

    for flag in ("model", "tuned_model"):
        if isinstance(getattr(args, flag, None), str):
            check_open_model(getattr(args, flag), parameter="--" + flag.replace("_", "-"))


def exit_status_of(err: BaseException) -> int | None:
    """The exit status `main` answers `err` with (`ERROR_STATUSES`); None for an error it lets through."""
    for module, name, status in ERROR_STATUSES:
        error_class = getattr(builtins if module == "builtins" else sys.modules.get(module), name, None)
        if error_class is not None and isinstance(err, error_class):
            return status
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one `embedpipe` command: the console script `embedpipe` and `python -m embedpipe.cli`.

    Args:
        argv: the arguments after `embedpipe` (default: `sys.argv[1:]`).

    Returns:
        The command's exit status (`embedpipe.cli.exits`): `exits.BAD_INPUT`, with the reason in one line on
        stderr, when the data, a file or a value is wrong; argparse exits with `exits.USAGE` on a bad flag.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    named = _named_command(argv)
    try:
        # A password in clear is refused before any work and before the parser is built, never echoed.
        _refuse_passwords(_connection_flags(argv))
        args = build_parser(() if command_named(named or "") is None else (named,)).parse_args(argv)
        _check_models(args)
        _refuse_passwords(args)  # again, on the parsed flags (an abbreviation such as --database)
        return args.func(args)
    except Exception as err:
        status = exit_status_of(err)
        if status is None:
            raise
        print(f"embedpipe {named}: {err}" if named else f"embedpipe: {err}", file=sys.stderr)
        return status
