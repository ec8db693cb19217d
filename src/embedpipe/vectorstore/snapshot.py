"""What one write means for the rows it does not name: `append` keeps them, `snapshot` deletes them.

`append` (the library's default) upserts the batch and leaves every other row alone. `snapshot` takes
the batch as the whole truth: the rows whose id is not in it (documents removed from the corpus, chunks
past the end of a document edited shorter) are deleted in the same transaction as the upserts, so a
search sees the old table or the new one, never a mix. `PgVectorWriter.write` runs a snapshot under the
table's exclusive advisory lock: two snapshots cannot interleave, and an `append` (shared lock) runs
wholly before or wholly after it.

A snapshot of no rows is refused (`check_write`): an empty vectors folder, a wrong path or a job that
wrote nothing would otherwise empty the table without a word. To empty a table on purpose, run
`TRUNCATE <table>` (or `DROP TABLE`) yourself.

The SQL that compares the table with the staging table of a write lives here; `postgres` and `rebuild`
call it.
"""

from __future__ import annotations

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore.identifiers import table_identifier
from embedpipe.vectorstore.sessions import Session
from embedpipe.write_modes import check_write_mode


def check_write(mode: str, table: str, rows: int) -> None:
    """Refuses an unknown mode, and a snapshot of no rows (it would delete every row of `table`).

    Raises:
        ValueError: with what to do instead.
    """
    check_write_mode(mode)
    if mode == "snapshot" and rows == 0:
        raise ValueError(
            f"write_mode 'snapshot' with no rows would delete every row of table {table!r}; refused. Check that "
            f"the vectors are the ones meant (an empty folder or a job that wrote nothing looks like this); to "
            f"empty the table on purpose run TRUNCATE {table} yourself; write_mode 'append' with no rows changes nothing"
        )


def _missing(target: sql.Composable, staging: sql.Composable) -> sql.Composable:
    return sql.SQL(
        "SELECT t.id FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE s.id = t.id)"
    ).format(target=target, staging=staging)


def count_missing(session: Session, table: str, staging: sql.Composable) -> int:
    """Rows of `table` whose id is not in `staging`: what a snapshot deletes."""
    query = sql.SQL("SELECT count(*) FROM ({}) missing").format(_missing(table_identifier(table), staging))
    return int(session.execute(query)[0][0])


def delete_missing(session: Session, table: str, staging: sql.Composable) -> int:
    """Deletes the rows of `table` whose id is not in `staging` (an anti-join); returns how many.

    Rows are locked in id order, as upserts and `PgVectorWriter.delete` lock them, so none of them deadlock.
    """
    target = table_identifier(table)
    query = sql.SQL(
        "WITH gone AS (DELETE FROM {target} WHERE id IN ({missing} ORDER BY t.id FOR UPDATE OF t) RETURNING 1)"
        " SELECT count(*) FROM gone"
    ).format(target=target, missing=_missing(target, staging))
    return int(session.execute(query)[0][0])
