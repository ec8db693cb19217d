"""The `embedpipe` command's exit statuses: one meaning each, listed by `embedpipe --help` and the README.

Only the standard library is imported here (the parser is built from it, and `--help` must stay fast).
"""

from __future__ import annotations

OK = 0
#: A task, job or server failed while it ran (its log says why).
RUN_FAILED = 1
#: A bad flag or a missing argument: argparse's own status.
USAGE = 2
#: The data, a file or a value is wrong; said in one line on stderr, before anything was written.
BAD_INPUT = 3
#: `embedpipe run`: the tuned model did not pass the quality gate; the reports are kept.
GATE_FAILED = 4
#: This machine lacks something the command needs: a Docker daemon, an optional extra (the message says
#: which `pip install` adds it).
MISSING = 5

#: status -> what it means, in the order `--help` lists them.
EXIT_CODES = {
    OK: "success",
    RUN_FAILED: "the run failed (a task, job or server; its log says why)",
    USAGE: "usage error (a bad flag or a missing argument)",
    BAD_INPUT: "bad input (data, file or value), nothing written",
    GATE_FAILED: "the tuned model did not pass the quality gate (reports kept)",
    MISSING: "this machine lacks what the command needs (Docker daemon, an optional extra: the message says what to install)",
}
