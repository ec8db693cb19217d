"""The lines embedpipe's own code logs inside the worker processes of Beam's local runner, on the console.

In multi_processing mode Beam's local job service logs every line of its workers through one logger
(BEAM_WORKER_LOGGER), each as "Worker: <the LogEntry, on one line>". `show_worker_lines` makes the lines
logged from embedpipe's code (the progress of each worker, its thread budget) show as the worker wrote
them, named after the worker's module, and keeps the workers' other lines at WARNING and above (unless
verbose). Only the standard library is imported until a worker line arrives (Beam sent it, so protobuf is
there).
"""

from __future__ import annotations

import logging
import os

#: The logger through which Beam's local runner logs every line of its worker processes.
BEAM_WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
#: The folder that holds the `embedpipe` package: the local runner's workers import it from the same place.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PACKAGE_PREFIX = os.path.join(_PACKAGE_PARENT, "embedpipe") + os.sep


def show_worker_lines() -> None:
    """Lets the lines embedpipe's own code logs in Beam's worker processes through (its progress, the thread
    budget), as the worker wrote them; the workers' other lines stay at WARNING and above unless verbose."""
    from embedpipe.progress import verbose

    worker = logging.getLogger(BEAM_WORKER_LOGGER)
    if not any(isinstance(f, WorkerLines) for f in worker.filters):
        worker.addFilter(WorkerLines(keep_all=verbose()))
    worker.setLevel(logging.INFO)


class WorkerLines(logging.Filter):
    """Rewrites a worker's forwarded line into its message, named after the worker's logger; drops those
    below WARNING not logged from embedpipe's code (unless `keep_all`)."""

    def __init__(self, keep_all: bool = False):
        super().__init__()
        self.keep_all = keep_all

    def filter(self, record: logging.LogRecord) -> bool:
        entry = _log_entry(record)
        if entry is None:
            return self.keep_all or record.levelno >= logging.WARNING
        message, location = entry
        module = _our_module(location)
        if not (module or self.keep_all or record.levelno >= logging.WARNING):
            return False
        record.msg, record.args = message, ()
        record.name = f"worker {module}" if module else "worker"
        return True


def _log_entry(record: logging.LogRecord) -> tuple[str, str] | None:
    """(message, log location "path:line") of a forwarded worker line, or None for any other record."""
    if record.msg != "Worker: %s" or not isinstance(record.args, tuple) or len(record.args) != 1:
        return None
    try:  # protobuf comes with Beam, which sent this record
        from apache_beam.portability.api import beam_fn_api_pb2
        from google.protobuf import text_format

        entry = text_format.Parse(str(record.args[0]), beam_fn_api_pb2.LogEntry())
    except Exception:  # noqa: BLE001 - a line that does not parse is shown as Beam logged it
        return None
    return entry.message, entry.log_location


def _our_module(location: str) -> str | None:
    """'embedpipe.embed.handler' from '<the package's folder>/embedpipe/embed/handler.py:120'; None for a
    file outside the embedpipe package (Beam's, even under a checkout folder named "embedpipe")."""
    path = os.path.normpath(location.rsplit(":", 1)[0])
    if not path.startswith(_PACKAGE_PREFIX):
        return None
    module = os.path.relpath(path, _PACKAGE_PARENT).removesuffix(".py").replace(os.sep, ".")
    return module.removesuffix(".__init__")
