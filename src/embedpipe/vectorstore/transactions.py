"""One transaction, retried when that is safe, and the advisory locks that keep concurrent writers apart.

Retried (the whole transaction, on a new connection, with bounded exponential backoff, each retry
logged): a dropped connection, a deadlock (SQLSTATE 40P01) and a serialization failure (40001). Any
other error is raised at once.

Advisory locks are transaction-level (`pg_advisory_xact_lock`), keyed by a stable 64-bit hash of the
object's name (`lock_key`), so every process that writes a table agrees on the key. Creating a table (or
the extension, or a schema), rebuilding or adding its index take the exclusive lock; an upsert into an
existing table takes the shared one, so upserts run side by side while none of them meets a half-built
table or index.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any

from embedpipe.vectorstore.identifiers import split_table_name
from embedpipe.vectorstore.sessions import Session, is_connection_lost

log = logging.getLogger(__name__)

#: SQLSTATEs after which re-running the same transaction can succeed.
RETRYABLE_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}


def sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of a psycopg or pg8000 database error, else None."""
    code = getattr(err, "sqlstate", None)
    if code:
        return code
    if err.args and isinstance(err.args[0], dict):  # pg8000: the server's error fields
        return err.args[0].get("C")
    return None


def retry_reason(err: BaseException) -> str | None:
    """Why `err` is worth re-running the transaction ("connection lost", "deadlock", ...), or None."""
    if is_connection_lost(err):
        return "connection lost"
    return RETRYABLE_SQLSTATES.get(sqlstate(err) or "")


def lock_key(kind: str, name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_xact_lock` (the same in every process and version)."""
    digest = hashlib.blake2b(f"embedpipe:{kind}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def table_lock_key(session: Session, table: str) -> int:
    """The key of `schema.table`; an unqualified table is resolved with the session's current schema."""
    schema, base = split_table_name(table)
    if schema is None:
        schema = session.execute("SELECT current_schema()")[0][0]
    return lock_key("table", f"{schema}.{base}")


def advisory_lock(session: Session, key: int, *, shared: bool = False) -> None:
    """Waits for the transaction-level advisory lock `key` (held until commit or rollback)."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    session.execute(f"SELECT {function}(%s)", (key,))


#: How often the server checks, during a long statement, that the client is still there (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL = "1s"


def stop_with_client(session: Session) -> None:
    """Makes the server abort this transaction soon after its client dies (`client_connection_check_interval`).

    Without it a killed writer's statement runs on to its end (an upsert into an HNSW-indexed table: many
    minutes), holding the row locks its re-run then waits for; benchmarks/README.md (upsert_recovery).
    """
    session.execute(
        "SELECT set_config('client_connection_check_interval', %s, true)"
        " WHERE current_setting('server_version_num')::int >= 140000",
        (CLIENT_CHECK_INTERVAL,),
    )


def run_transaction(
    connect: Callable[[], Any],
    work: Callable[[Session], Any],
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
) -> tuple[Any, int]:
    """Runs `work(session)` in one transaction on a new connection; again, up to `retries` times, when it
    failed for a reason a re-run can cure (`retry_reason`).

    A dropped connection waits `backoff * 2**(attempt - 1)` seconds; a deadlock or serialization failure
    waits a random 50-150 % of that, so the transactions that collided do not meet again in step.

    Returns:
        (work's result, attempts).
    """
    attempt = 0
    while True:
        attempt += 1
        session = None
        try:
            session = Session(connect())
            result = work(session)
            session.commit()
            return result, attempt
        except Exception as err:
            if session is not None:
                session.rollback()
            reason = retry_reason(err)
            if attempt > retries or reason is None:
                raise
            delay = backoff * 2 ** (attempt - 1)
            if reason != "connection lost":
                delay *= 0.5 + random.random()
            log.warning(
                "%s (%s); retrying the whole transaction in %.2f s (attempt %d of %d)",
                reason,
                type(err).__name__,
                delay,
                attempt + 1,
                retries + 1,
            )
            sleep(delay)
        finally:
            if session is not None:
                session.close()
