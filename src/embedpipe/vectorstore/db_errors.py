"""Database errors turned into messages for people: which row (by id), which column, what the server said.

`rows.validate_batch` refuses what PostgreSQL is known to refuse before anything is sent. What still
fails on the server (a column type of someone else's table, a check constraint, a limit) arrives as a
raw driver error; the writer passes it to `explain`. When COPY names the line, the row is known at
once; otherwise `find_failing_row` loads the rows into an empty copy of the table, where COPY names it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.validation import DataValidationError, Problem
from embedpipe.vectorstore import schema
from embedpipe.vectorstore.identifiers import table_identifier
from embedpipe.vectorstore.rows import VectorBatch, database_rows
from embedpipe.vectorstore.sessions import Session

log = logging.getLogger(__name__)

_COPY_LINE = re.compile(r"COPY \S+, line (\d+)(?:, column (\w+))?")
#: SQLSTATE classes of errors caused by one row's values: data exception, integrity, program limit.
ROW_ERROR_CLASSES = ("22", "23", "54")
#: The temporary empty copy of the table the writer loads into to find a failing row.
PROBE_TABLE = "embedpipe_probe"


class VectorStoreError(ValueError):
    """The database refused a write for a reason that is not one row's values (permissions, schema, ...)."""


def error_fields(err: BaseException) -> dict[str, str | None]:
    """sqlstate, message, detail, context and column of a psycopg or pg8000 error (None where unknown)."""
    diag = getattr(err, "diag", None)
    if diag is not None:
        return {
            "sqlstate": getattr(err, "sqlstate", None),
            "message": diag.message_primary,
            "detail": diag.message_detail,
            "context": diag.context,
            "column": diag.column_name,
        }
    fields = err.args[0] if err.args and isinstance(err.args[0], dict) else {}
    return {
        "sqlstate": fields.get("C"),
        "message": fields.get("M"),
        "detail": fields.get("D"),
        "context": fields.get("W"),
        "column": fields.get("c"),
    }


def is_database_error(err: BaseException) -> bool:
    """Whether `err` came from the server or the driver (psycopg or pg8000)."""
    module = type(err).__module__
    return module.startswith(("psycopg", "pg8000"))


def is_row_error(err: BaseException) -> bool:
    code = error_fields(err)["sqlstate"] or ""
    return code[:2] in ROW_ERROR_CLASSES


def copy_line(err: BaseException) -> tuple[int | None, str | None]:
    """(1-based line, column) of the row COPY was reading when it failed, from the error's context."""
    fields = error_fields(err)
    match = _COPY_LINE.search(fields["context"] or "")
    if not match:
        return None, fields["column"]
    return int(match.group(1)), match.group(2) or fields["column"]


def _said(err: BaseException) -> str:
    fields = error_fields(err)
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    message = (fields["message"] or first_line).strip()
    if fields["detail"] and not fields["detail"].startswith("Failing row contains"):  # the row's values: long
        message += f" ({fields['detail'].strip()})"
    return f"the database refused it: {message} [SQLSTATE {fields['sqlstate'] or '?'}]"


def row_error(table: str, source: str, row: int, ident: str, column: str | None, err: BaseException):
    """A DataValidationError naming the row's id (and column) for a database error caused by that row."""
    said = _said(err).replace(f'"{PROBE_TABLE}"', f'"{table}"')
    return DataValidationError([Problem(source, None, column, f"row {row} (id {ident!r}), table {table}: {said}")])


def batch_error(table: str, rows: int, err: BaseException) -> VectorStoreError:
    """A VectorStoreError for an error no single row could be blamed for."""
    fields = error_fields(err)
    hint = ""
    if (fields["sqlstate"] or "").startswith("42"):
        hint = (
            "; does the table have the columns embedpipe writes "
            "(id TEXT PRIMARY KEY, embedding VECTOR(n), content TEXT, metadata JSONB)?"
        )
    return VectorStoreError(f"writing {rows} row(s) to table {table} failed: {_said(err)}{hint}")


def explain(err: BaseException, table: str, batch: VectorBatch, connect: Callable[[], Any]) -> Exception:
    """The database error of writing `batch` as a message for people, naming the row where one is to blame.

    Args:
        err: What the driver raised.
        table: The table written.
        batch: The rows written, in the order they were sent.
        connect: A new connection, to find the row when the error does not say (`find_failing_row`).
    """
    log.debug("write to %s failed", table, exc_info=err)
    if not is_row_error(err):
        return batch_error(table, len(batch), err)
    line, column = copy_line(err)
    if line is None or not 1 <= line <= len(batch):
        found = find_failing_row(table, batch, connect)
        if found is None:
            return batch_error(table, len(batch), err)
        line, column, err = found
    row = line - 1
    return row_error(table, batch.source, row, batch.ids[row], column, err)


def find_failing_row(
    table: str, batch: VectorBatch, connect: Callable[[], Any]
) -> tuple[int, str | None, BaseException] | None:
    """COPYs the rows into an empty temporary copy of the table (its column types, defaults and check
    constraints); COPY then names the line it failed on. Nothing is kept (the transaction is rolled back).

    Returns:
        (1-based line, column, the error), or None when the copy took every row.
    """
    session = None
    try:
        session = Session(connect())
        kind = schema.existing_column_type(session, table) or schema.column_type(batch.dimension)
        session.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
                sql.Identifier(PROBE_TABLE), table_identifier(table)
            )
        )
        try:
            session.copy_rows(sql.Identifier(PROBE_TABLE), database_rows(batch), kind.split("(")[0])
        except Exception as err:  # noqa: BLE001 - the error we are looking for
            line, column = copy_line(err)
            return (line, column, err) if line is not None and 1 <= line <= len(batch) else None
        return None
    except Exception:  # noqa: BLE001 - the diagnosis is best effort; the original error is reported
        log.debug("could not find the failing row", exc_info=True)
        return None
    finally:
        if session is not None:
            session.rollback()
            session.close()
