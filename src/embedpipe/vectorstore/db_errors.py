"""Database errors turned into messages for people: which row (by id), which column, what the server said.

`rows.validate_batch` refuses what PostgreSQL is known to refuse before anything is sent. What still
fails on the server (a column type of someone else's table, a check constraint, a limit) arrives as a
raw driver error; the writer passes it here. When COPY names the line, the row is known at once;
otherwise the writer finds it (`postgres.PgVectorWriter` re-loads the rows into an empty copy of the
table, where COPY names the line).
"""

from __future__ import annotations

import re

from embedpipe.validation import DataValidationError, Problem

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
