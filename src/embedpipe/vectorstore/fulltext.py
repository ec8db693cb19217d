"""Full-text search in a pgvector table: a generated `tsvector` column, its GIN index, and the query side.

The column `content_tsv` is `GENERATED ALWAYS AS (to_tsvector(<config>, embedpipe_cjk_bigrams_v1(content)))
STORED`, so PostgreSQL keeps it in step with `content` on every insert and upsert (the batch and the
streaming writer alike) and computes it for the rows of an existing table when the column is added.

PostgreSQL's parsers do not split Japanese or Chinese words (a run of kanji and kana is one "word"), so
`embedpipe_cjk_bigrams_v1`, an SQL function created in the table's schema, rewrites each run of CJK
characters (Han, hiragana, katakana, Hangul) as its overlapping character bigrams (`東京大学` ->
`東京 京大 大学`, a single character stays as it is) and CJK punctuation as blanks; Latin text is kept as
words, for the configuration to stem. A query goes through the same function and configuration, and
its lexemes are OR-ed (`'aspirin' | 'heart'`), the common ones left out and the rest weighted by idf (`text_rank`). A one-character query word matches
no bigram.

The text search configuration (`english` stems, `simple` only lower-cases) is a table setting
(`IndexSettings.text_search`), fixed when the column is made; searches read it from the column's
definition. The choice of default was measured on SciFact's train queries (benchmarks/README.md, search).

Cost on an existing table: adding a stored generated column rewrites the whole table under an ACCESS
EXCLUSIVE lock (reads and writes wait), rebuilding every index on it, the HNSW index included, then
builds the GIN index: about the time of the first upload's index build plus a pass over the text. It
happens once, in the first write after upgrading; `IndexSettings(text_search="none")` skips it.
"""

from __future__ import annotations

import re

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.validation import DataValidationError, Problem
from embedpipe.vectorstore.identifiers import split_table_name, table_identifier, unique_derived_name
from embedpipe.vectorstore.sessions import Session

#: The generated tsvector column.
COLUMN = "content_tsv"
#: The SQL function that turns CJK runs into bigrams (versioned: a changed body gets a new name, since
#: stored columns computed by the old one would otherwise no longer match the queries).
FUNCTION = "embedpipe_cjk_bigrams_v1"
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f"
_CJK_PUNCTUATION = r"\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
_FUNCTION_BODY = (
    f"SELECT CASE WHEN t !~ '[{_CJK}]' THEN t ELSE ("
    f" SELECT coalesce(string_agg(CASE WHEN m !~ '^[{_CJK}]' OR length(m) = 1 THEN m ELSE"
    "  (SELECT string_agg(substr(m, i, 2), ' ' ORDER BY i) FROM generate_series(1, length(m) - 1) AS i) END,"
    "  ' ' ORDER BY n), '')"
    f" FROM regexp_matches(regexp_replace(t, '[{_CJK_PUNCTUATION}]', ' ', 'g'), '[{_CJK}]+|[^{_CJK}]+', 'g')"
    "  WITH ORDINALITY AS r(mm, n), LATERAL (SELECT mm[1]) AS x(m)) END"
)
_CONFIG_NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_CONFIG_IN_EXPRESSION = re.compile(r"to_tsvector\('([^']+)'::regconfig")


def check_text_search(config: str) -> str:
    """A text search configuration name (`english`, `simple`, `pg_catalog.german`) or "none"."""
    if config != "none" and not _CONFIG_NAME.match(config or ""):
        raise ValueError(f"text_search {config!r} must be a text search configuration name (english, simple) or none")
    return config


def function_identifier(table: str) -> sql.Composable:
    """The bigram function beside the table: `schema.fn` for `schema.table`, unqualified otherwise."""
    schema_name, _ = split_table_name(table)
    return sql.Identifier(schema_name, FUNCTION) if schema_name else sql.Identifier(FUNCTION)


def text_column(session: Session, table: str) -> tuple[bool, str | None]:
    """(whether the table exists, its full-text configuration): None when it has no full-text column, ""
    when its `content_tsv` column was not made by embedpipe."""
    rows = session.execute(
        "SELECT c.oid IS NOT NULL, (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a"
        " JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped)"
        " FROM (SELECT to_regclass(%s)::oid AS oid) c",
        (COLUMN, session.render(table_identifier(table))),
    )
    exists, expression = rows[0]
    if expression is None:
        return bool(exists), None
    match = _CONFIG_IN_EXPRESSION.search(expression)
    return bool(exists), match.group(1) if match else ""


def add_text_column(session: Session, table: str, config: str) -> str:
    """Creates the bigram function (if missing), the generated column and its GIN index (if missing).

    The caller holds the table's exclusive advisory lock. Returns the GIN index's name ("" when
    `config` is "none").
    """
    if config == "none":
        return ""
    namespace, _, name = config.rpartition(".")
    known = session.execute(
        "SELECT count(*) FROM pg_ts_config c JOIN pg_namespace n ON n.oid = c.cfgnamespace"
        " WHERE c.cfgname = %s AND (%s = '' OR n.nspname = %s)",
        (name, namespace, namespace),
    )
    if not known[0][0]:
        raise DataValidationError(
            [Problem(table, None, "text_search", f"PostgreSQL has no text search configuration {config!r}")]
        )
    function = function_identifier(table)
    if not session.execute("SELECT to_regprocedure(%s) IS NOT NULL", (session.render(function) + "(text)",))[0][0]:
        session.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}(t text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS {}"
            ).format(function, sql.Literal(_FUNCTION_BODY))
        )
    session.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} tsvector"
            " GENERATED ALWAYS AS (to_tsvector({}::regconfig, {}(content))) STORED"
        ).format(table_identifier(table), sql.Identifier(COLUMN), sql.Literal(config), function)
    )
    name = unique_derived_name(table, "content_gin")
    session.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
            sql.Identifier(name), table_identifier(table), sql.Identifier(COLUMN)
        )
    )
    return name


def or_query(function: sql.Composable, config: str, placeholder: sql.Composable) -> sql.Composed:
    """An SQL expression: the query text's lexemes (same function and configuration as the column), OR-ed.

    NULL when the text has no lexeme (only stop words): nothing matches it. Each lexeme is quoted as
    tsquery input wants it (quotes doubled, backslashes escaped), so no word is read as an operator.
    """
    return sql.SQL(
        "(SELECT string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | ')"
        " FROM unnest(tsvector_to_array(to_tsvector({config}::regconfig, {function}({text})))) AS lexeme)::tsquery"
    ).format(config=sql.Literal(config), function=function, text=placeholder)
