"""The logging of the `embedpipe` commands that run long (embed, embed-stream, upload, evaluate, fine-tune).

One set-up, one format: INFO and above to stderr as `HH:MM:SS name: message`, so their progress lines
(`embedpipe.progress`) show while they run and stdout keeps only what the command prints as its result.
Only the standard library is imported here.
"""

from __future__ import annotations

import logging
import sys

#: The format of every command's log lines.
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
#: Time only: a person watching a command knows the day.
DATE_FORMAT = "%H:%M:%S"
#: Loggers that say, per step or per bundle, what our progress lines already say.
CHATTY_LIBRARIES = ("transformers", "sentence_transformers", "apache_beam", "urllib3", "httpx", "filelock")


def configure_logging(level: int = logging.INFO) -> None:
    """Sends INFO and above to stderr in `LOG_FORMAT`, unless the root logger has handlers already.

    Libraries that chat per step (`CHATTY_LIBRARIES`) are held at WARNING unless `$EMBEDPIPE_VERBOSE`.

    Args:
        level: The root logger's level.
    """
    from embedpipe.progress import quiet_libraries

    # Not forced: where logging is set up already (a test's capture, an embedding application), that wins.
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=DATE_FORMAT, stream=sys.stderr)
    quiet_libraries(*CHATTY_LIBRARIES)
    from embedpipe.embed.worker_logs import show_worker_lines  # stdlib only until a worker line arrives

    show_worker_lines()
