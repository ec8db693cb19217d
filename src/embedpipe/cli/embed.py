"""Embedding a corpus with Beam: `embedpipe embed` (a batch of files) and `embedpipe embed-stream` (Pub/Sub
changes; `embedpipe stream` is its alias).

Both run on the local runner or on Dataflow; their flags come from the library (`embedpipe.embed.job`,
`embedpipe.embed.settings`, `embedpipe.embed.streaming.cli`), declared once there.
"""

from __future__ import annotations

import argparse

from embedpipe.cli import exits
from embedpipe.cli.commands import add_command_parser
from embedpipe.cli.console import configure_logging


def cmd_embed(args: argparse.Namespace) -> int:
    """`embedpipe embed`: the Beam job that writes a corpus's vectors as Parquet shards.

    Args:
        args: the parsed `embed` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from dataclasses import replace

    from embedpipe.embed.dataflow import default_project
    from embedpipe.embed.job import config_from_args, run_job
    from embedpipe.embed.settings import DataflowSettings, from_mapping

    configure_logging()  # the job's progress lines: without it, nothing between the first line and the last
    dataflow = from_mapping(DataflowSettings, args)
    beam_args = []
    if args.runner == "DataflowRunner":
        dataflow = replace(dataflow, project=dataflow.project or default_project())
        beam_args = dataflow.beam_args()
    config = config_from_args(args, dataflow if args.runner == "DataflowRunner" else None)
    print(f"embedpipe embed: {config.input_pattern} ({config.input_format}) -> {config.output} on {args.runner}")
    result = run_job(config, beam_args)
    print(result.summary())
    return exits.OK


def cmd_stream(args: argparse.Namespace) -> int:
    """`embedpipe embed-stream` (alias `stream`): the streaming Beam job that upserts and deletes documents in pgvector as they arrive.

    Args:
        args: the parsed `stream` arguments.

    Returns:
        The exit status, `exits.OK`.
    """
    from embedpipe.embed.streaming import run_stream
    from embedpipe.embed.streaming.cli import config_and_args_from_args

    configure_logging()
    config, beam_args = config_and_args_from_args(args)
    result = run_stream(config, beam_args)
    print(result.summary())
    return exits.OK


def add_embed_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe embed`.

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    from embedpipe.embed.job import add_job_arguments
    from embedpipe.embed.settings import DataflowSettings, add_arguments

    embed = add_command_parser(sub, "embed")
    add_job_arguments(embed)
    cloud = embed.add_argument_group("Dataflow (with --runner DataflowRunner)")
    cloud.add_argument(
        "--runner",
        default="DirectRunner",
        choices=["DirectRunner", "DataflowRunner"],
        help="Beam's local runner or Google Cloud Dataflow (default: %(default)s)",
    )
    add_arguments(cloud, DataflowSettings)
    embed.set_defaults(func=cmd_embed)


def add_stream_parser(sub: argparse._SubParsersAction) -> None:
    """Registers `embedpipe embed-stream` and its alias `embedpipe stream` (the name before issue 17).

    Args:
        sub: the subcommands of the `embedpipe` parser.
    """
    from embedpipe.embed.streaming.cli import add_stream_arguments

    stream = add_command_parser(sub, "embed-stream")
    add_stream_arguments(stream)
    stream.set_defaults(func=cmd_stream)
