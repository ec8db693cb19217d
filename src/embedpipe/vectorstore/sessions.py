"""One database connection behind a small interface, so the writer speaks psycopg and pg8000 alike.

psycopg (plain URIs, the embedded database) loads with binary COPY through pgvector's adapter; pg8000
(what the AlloyDB and Cloud SQL connectors return) loads with text COPY.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql


def is_connection_lost(err: BaseException) -> bool:
    """Whether an error means the connection dropped (worth a retry on a new one) rather than bad SQL/data."""
    import psycopg

    if isinstance(
        err, psycopg.errors.AdminShutdown | psycopg.errors.ConnectionException | psycopg.errors.CannotConnectNow
    ):
        return True
    if isinstance(err, psycopg.OperationalError) and getattr(err, "sqlstate", None) in (
        None,
        "57P01",
        "57P02",
        "57P03",
    ):
        return True  # no SQLSTATE: the socket closed under us
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    try:
        import pg8000.exceptions as pg8000_errors
    except ImportError:  # pragma: no cover
        return False
    if isinstance(err, pg8000_errors.InterfaceError):
        return True
    if isinstance(err, pg8000_errors.DatabaseError) and err.args and isinstance(err.args[0], dict):
        return str(err.args[0].get("C", "")).startswith(("08", "57P"))
    return False


class Session:
    """A connection in one transaction at a time: execute, copy rows, commit/rollback."""

    def __init__(self, conn):
        self.conn = conn
        self.kind = "psycopg" if type(conn).__module__.startswith("psycopg") else "dbapi"
        if self.kind == "psycopg":
            from embedpipe.extras import optional_imports

            with optional_imports("local", "pgvector's types in psycopg"):
                from pgvector.psycopg import register_vector

            try:
                register_vector(conn)
            except Exception:  # noqa: BLE001 - the extension may not exist yet; registered again after CREATE EXTENSION
                conn.rollback()

    def register_vector(self) -> None:
        if self.kind == "psycopg":
            from embedpipe.extras import optional_imports

            with optional_imports("local", "pgvector's types in psycopg"):
                from pgvector.psycopg import register_vector

            register_vector(self.conn)

    def render(self, query) -> str:
        return query if isinstance(query, str) else query.as_string(self.conn if self.kind == "psycopg" else None)

    def execute(self, query, params: Sequence[Any] = ()) -> list[tuple]:
        if self.kind == "psycopg":
            cur = self.conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []
        cur = self.conn.cursor()
        try:
            cur.execute(self.render(query), tuple(params) if params else ())
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def copy_rows(self, table: sql.Composable, rows: Iterable[tuple], vector_type: str = "vector") -> int:
        """COPY (id, embedding, content, metadata) rows into `table`; embedding is a float32 vector."""
        columns = sql.SQL("(id, embedding, content, metadata)")
        count = 0
        if self.kind == "psycopg":
            query = sql.SQL("COPY {} {} FROM STDIN (FORMAT BINARY)").format(table, columns)
            half = vector_type == "halfvec"
            if half:
                from pgvector import HalfVector
            with self.conn.cursor() as cur, cur.copy(query) as copy:
                # jsonb's binary form is a version byte (1) then the JSON text: sent as raw bytes
                copy.set_types(["text", vector_type, "text", "bytea"])
                for ident, embedding, content, metadata in rows:
                    copy.write_row(
                        (
                            ident,
                            HalfVector(embedding) if half else embedding,
                            content,
                            None if metadata is None else b"\x01" + metadata.encode(),
                        )
                    )
                    count += 1
            return count
        buffer = io.StringIO()
        for ident, embedding, content, metadata in rows:
            vector = "[" + ",".join(repr(float(x)) for x in embedding) + "]"
            buffer.write("\t".join((_copy_text(ident), vector, _copy_text(content), _copy_text(metadata))) + "\n")
            count += 1
        buffer.seek(0)
        cur = self.conn.cursor()
        try:
            cur.execute(self.render(sql.SQL("COPY {} {} FROM STDIN").format(table, columns)), stream=buffer)
        finally:
            cur.close()
        return count

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - a dead connection cannot roll back; the server already has
            pass

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def _copy_text(value) -> str:
    if value is None:
        return r"\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
