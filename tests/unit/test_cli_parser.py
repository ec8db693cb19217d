"""The `embedpipe` parser describes itself: every option with help, every enumeration with its choices, every
command in the top-level docstring, and `--help`/`--version` answered without importing anything heavy."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

import embedpipe.cli
from embedpipe.cli import build_parser, exits, main
from embedpipe.cli.commands import COMMANDS

#: The packages that make a command slow to start (seconds of imports); `--help` and `--version` need none.
HEAVY = ("apache_beam", "torch", "sentence_transformers", "kfp", "pandas", "numpy", "google.cloud", "psycopg")


def _enumerations() -> dict[str, tuple[str, ...]]:
    """Option dest -> the values the code accepts, from the modules that own them (whatever they import)."""
    from embedpipe.models import BACKENDS, PRECISIONS
    from embedpipe.prepare import VERTEX_LIMIT_MODES
    from embedpipe.prompts import TASK_TYPES
    from embedpipe.vectorstore.connections import IP_TYPES, POSTGRES_TARGETS
    from embedpipe.vectorstore.hybrid import SEARCH_MODES
    from embedpipe.vectorstore.schema import INDEX_KINDS, METRICS
    from embedpipe.vectorstore.upload import TARGETS
    from embedpipe.vectorstore.vector_search import UPDATE_METHODS
    from embedpipe.write_modes import WRITE_MODES

    return {
        "task_type": TASK_TYPES,
        "write_mode": WRITE_MODES,
        "mode": SEARCH_MODES,
        "search_mode": SEARCH_MODES,
        "metric": tuple(METRICS),
        "index_metric": tuple(METRICS),
        "index_kind": INDEX_KINDS,
        "vector_search_update_method": UPDATE_METHODS,
        "ip_type": IP_TYPES,
        "backend": BACKENDS,
        "precision": PRECISIONS,
        "vertex_limits": VERTEX_LIMIT_MODES,
        "split": ("test", "validation", "train"),
        "caching": ("on", "off", "default"),
        # `upload` writes every target; the streaming job (embed-stream) the Postgres ones
        "target": TARGETS + POSTGRES_TARGETS,
    }


#: A dest that reads like a choice among names: such an option must list its choices (add it to
#: `_enumerations` when a new one appears).
ENUMERATION_LIKE = re.compile(r"(mode|type|target|runner|backend|method|kind|metric|precision|split|caching|limits)$")
#: Enumeration-like by name but open-ended: a machine type, an accelerator type ("nvidia-l4").
OPEN_ENDED = {"machine_type", "accelerator_type"}


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Command name -> its parser, once per command (not again under an alias)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unique, seen = {}, set()
    for name, sub in action.choices.items():
        if id(sub) not in seen:
            seen.add(id(sub))
            unique[name] = sub
    return unique


@pytest.fixture(scope="module")
def full_parser() -> argparse.ArgumentParser:
    return build_parser()  # every command's parser (the embed ones import Beam)


def _own_help(action: argparse.Action) -> str:
    """The help text without argparse's default placeholder (a help that is only "(default: X)" says nothing)."""
    return re.sub(r"\(?default: %\(default\)s\)?", "", action.help or "").strip(" ;,.")


def test_every_option_has_help_and_every_enumeration_lists_its_choices(full_parser):
    known = _enumerations()
    missing_help, missing_choices, wrong_choices = [], [], []
    for name, sub in subparsers(full_parser).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not _own_help(action):
                missing_help.append(flag)
            if action.dest in known:
                if not action.choices:
                    missing_choices.append(flag)
                elif not set(action.choices) <= set(known[action.dest]):
                    wrong_choices.append(f"{flag}: {sorted(action.choices)} not in {sorted(known[action.dest])}")
            elif ENUMERATION_LIKE.search(action.dest) and action.dest not in OPEN_ENDED and not action.choices:
                missing_choices.append(f"{flag} (looks like an enumeration: list it in _enumerations)")
    assert not missing_help, "options without help: " + ", ".join(missing_help)
    assert not missing_choices, "enumerations without choices: " + ", ".join(missing_choices)
    assert not wrong_choices, "choices the code does not accept: " + "; ".join(wrong_choices)


def test_the_choices_are_the_codes_own(full_parser):
    """Where a parser spells a set out (to stay light), it is the set the code checks against."""
    known = _enumerations()
    parsers = subparsers(full_parser)

    def choices(command: str, dest: str) -> set[str]:
        return set(next(a for a in parsers[command]._actions if a.dest == dest).choices)

    from embedpipe.vectorstore.connections import POSTGRES_TARGETS
    from embedpipe.vectorstore.upload import TARGETS

    assert choices("upload", "target") == set(TARGETS)
    assert choices("embed-stream", "target") == set(POSTGRES_TARGETS)
    assert choices("search", "mode") == choices("evaluate", "search_mode") == set(known["mode"])
    assert choices("search", "metric") == choices("upload", "index_metric") == set(known["metric"])
    assert choices("upload", "index_kind") == set(known["index_kind"])
    assert choices("upload", "ip_type") == choices("embed-stream", "ip_type") == set(known["ip_type"])
    assert choices("upload", "vector_search_update_method") == set(known["vector_search_update_method"])
    for command in ("run", "embed", "embed-stream", "evaluate", "fine-tune", "search"):
        assert choices(command, "task_type") == set(known["task_type"]), command


def test_a_task_type_in_any_case_is_accepted_and_a_wrong_one_is_a_usage_error(full_parser, capsys):
    args = full_parser.parse_args(["search", "q", "--task-type", "question_answering"])
    assert args.task_type == "QUESTION_ANSWERING"
    with pytest.raises(SystemExit) as exited:
        full_parser.parse_args(["search", "q", "--task-type", "RETRIEVAL"])
    assert exited.value.code == exits.USAGE
    assert "invalid choice: 'RETRIEVAL'" in capsys.readouterr().err


def test_the_command_table_is_what_the_parser_registers_and_the_docstring_lists(full_parser):
    action = next(a for a in full_parser._actions if isinstance(a, argparse._SubParsersAction))
    registered = set(action.choices)
    assert registered == {name for c in COMMANDS for name in (c.name, *c.aliases)}
    summaries = {choice.dest: choice.help for choice in action._choices_actions}
    assert summaries == {c.name: c.summary for c in COMMANDS}
    documented = re.findall(r"^embedpipe ([a-z-]+)\b", embedpipe.cli.__doc__, flags=re.MULTILINE)
    assert documented == [c.name for c in COMMANDS], "the docstring lists every command once, in the table's order"
    for command in COMMANDS:  # an alias is named beside its command
        assert all(f"alias: {alias}" in embedpipe.cli.__doc__ for alias in command.aliases)


def test_top_level_help_lists_every_command_and_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == exits.OK
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^    {re.escape(command.name)}\b", out, flags=re.MULTILINE), command.name
    statuses = out.split("exit statuses:", 1)[1]
    for status, meaning in exits.EXIT_CODES.items():
        assert f"  {status}  {meaning}" in statuses


@pytest.mark.parametrize("command", [c.name for c in COMMANDS] + ["stream"])
def test_each_command_help_shows_all_its_options(command, full_parser, capsys):
    """`embedpipe CMD --help` builds only that command's parser: it still shows every option of the full one."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == exits.OK
    out = capsys.readouterr().out
    parser = subparsers(full_parser)[command if command != "stream" else "embed-stream"]
    for action in parser._actions:
        for flag in action.option_strings:
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", out), f"{command} --help lacks {flag}"


# Modules already there at interpreter start are not ours: a venv with google-cloud-aiplatform runs its
# `*-nspkg.pth`, which imports the `google.cloud` namespace before any code runs.
PROBE = """
import json, sys
at_start = set(sys.modules)
from embedpipe.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exited:
    code = exited.code
new = set(sys.modules) - at_start
heavy = sorted(h for h in {heavy!r} if any(m == h or m.startswith(h + ".") for m in new))
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["-h"],
        [],
        # only the named command's parser is built: not the embed ones, which import Beam
        ["search", "--help"],
        ["prepare", "--help"],
    ],
)
def test_help_and_version_import_nothing_heavy(argv):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True, timeout=60
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    expected = exits.USAGE if not argv else exits.OK  # no command at all: argparse's usage error
    assert outcome == {"code": expected, "heavy": []}, done.stderr
