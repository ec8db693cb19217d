"""The `embedpipe` subcommands: name, aliases, one-line summary and the module that registers each.

`embedpipe --help` lists them from this table without importing the modules that build their parsers (the
`embed` and `embed-stream` flags come from the Beam job's modules: seconds of imports); `embedpipe.cli.main`
builds the one parser the command line names. Each module's `add_*_parser` takes its summary and aliases
from here (`add_command_parser`), so they are declared once. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import importlib
from typing import NamedTuple


class Command(NamedTuple):  # not a dataclass: `dataclasses` alone takes longer to import than this whole module
    """One subcommand of `embedpipe`.

    Attributes:
        name: what the command line names, e.g. "fine-tune".
        summary: its one line in `embedpipe --help` (argparse's `help=`).
        register: "module:function" under `embedpipe.cli`; the function takes the subparsers action and adds
            the command's parser with every option.
        aliases: other names of the command (an older spelling).
    """

    name: str
    summary: str
    register: str
    aliases: tuple[str, ...] = ()

    def add(self, sub: argparse._SubParsersAction) -> None:
        """Adds this command's full parser to `sub` (importing its module)."""
        module, function = self.register.split(":")
        getattr(importlib.import_module(f"embedpipe.cli.{module}"), function)(sub)

    def add_stub(self, sub: argparse._SubParsersAction) -> None:
        """Adds a parser with no options: enough for `embedpipe --help` to list the command."""
        sub.add_parser(self.name, aliases=list(self.aliases), help=self.summary, add_help=False)


#: In the order `embedpipe --help` lists them.
COMMANDS = (
    Command("run", "run the whole pipeline locally with kfp.local on embedded defaults", "pipeline:add_run_parser"),
    Command("prepare", "validate and prepare BEIR-style data (library only, no KFP)", "data:add_prepare_parser"),
    Command("submit", "submit compiled pipeline YAML to Vertex AI Pipelines", "pipeline:add_submit_parser"),
    Command(
        "embed",
        "embed a corpus into Parquet vector shards with Beam (local runner or Dataflow)",
        "embed:add_embed_parser",
    ),
    Command(
        "embed-stream",
        "embed document changes (Pub/Sub, or a file locally) into pgvector as they arrive (local runner or Dataflow)",
        "embed:add_stream_parser",
        aliases=("stream",),
    ),
    Command("evaluate", "NDCG@10 etc. of a model (and a tuned one) on a BEIR folder", "data:add_evaluate_parser"),
    Command(
        "fine-tune",
        "fine-tune a model on the train labels of a BEIR folder (library only, no KFP)",
        "data:add_fine_tune_parser",
    ),
    Command(
        "serve", "serve a model with a textembedding-gecko compatible :predict endpoint", "serving:add_serve_parser"
    ),
    Command(
        "upload",
        "write Parquet vectors (an embed_corpus `vectors` folder) into a vector database",
        "upload:add_upload_parser",
    ),
    Command("search", "top-k documents for a text from the vector database", "serving:add_search_parser"),
    Command("db", "start the embedded PostgreSQL + pgvector and print its psql URI", "serving:add_db_parser"),
)

_BY_NAME = {name: command for command in COMMANDS for name in (command.name, *command.aliases)}


def command_named(name: str) -> Command | None:
    """The command `name` (or one of its aliases) names; None for anything else."""
    return _BY_NAME.get(name)


def add_command_parser(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """`sub.add_parser` for the command `name`, with its summary and aliases from `COMMANDS`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
        name: the command's name.
        **kwargs: more of `add_parser`'s arguments (a `description`).

    Returns:
        The command's parser, to add its options to.
    """
    command = _BY_NAME[name]
    return sub.add_parser(name, aliases=list(command.aliases), help=command.summary, **kwargs)
