"""The text side of `hybrid`: an idf-weighted (BM25-like) ranking of the full-text column, as SQL.

`ts_rank_cd` alone has no inverse document frequency: a word in half the corpus counts as much as one
in three documents. Here a row's score is the sum over the query's terms it contains of

    idf(term) * ts_rank(content_tsv, term, normalization)

with idf = ln(1 + (N - df + 0.5) / (df + 0.5)) as in BM25, N the table's rows and df the rows holding the
term. `ts_rank` of a single term saturates in the term's frequency (1, 1.25, 1.36, ... of its first
occurrence's weight: a sum of 1/j², PostgreSQL's `calc_rank_or`) and `normalization` divides it by the
document's length (16: 1 + log of its unique words, the default, chosen on SciFact's train queries over
0 and 1: benchmarks/README.md, search).

Where the statistics come from: df is counted per query term through the GIN index (a single-lexeme
`@@` needs no recheck, so the count reads no tsvector), and N by `count(*)`; both at query time, so
nothing is kept in step with writes (no side table to update with each upsert, none to go stale). The
cost is a bitmap count per term and a `count(*)` (a sequential scan on a big table; cheap at SciFact's
size). Terms in more than `common_fraction` of the rows are left out (their idf is small and reading
their rows costs most): the rarest term is always kept.

The candidates are found per term through the GIN index: a LATERAL subquery per kept term, so each is a
parameterised bitmap index scan on that one lexeme (EXPLAIN ANALYZE shows `Bitmap Index Scan` on the GIN
index, loops = terms), never `@@` evaluated on every row.
"""

from __future__ import annotations

from embedpipe.extras import optional_imports

with optional_imports("local", "the PostgreSQL vector store"):  # a missing psycopg: the pip line, not a traceback
    from psycopg import sql

from embedpipe.vectorstore import fulltext

#: `ts_rank` normalisations PostgreSQL knows (bit flags, OR-able): 0 none, 1 log length, 2 length,
#: 4 mean harmonic distance (cover density only), 8 unique words, 16 log unique words, 32 rank/(rank+1).
NORMALIZATIONS = range(64)


def text_ranking(
    table: sql.Composable, query: sql.Composable, condition: sql.Composable | None = None
) -> sql.Composed:
    """CTEs `terms`, `kept`, `txt` (id, rank, score; best first, at most `%(text_depth)s` rows).

    Args:
        table: The table's identifier.
        query: An SQL expression of the query's OR-ed lexemes (`fulltext.or_query`), NULL for none.
        condition: A filter over the row's `metadata` (named parameters), applied to the candidates; the
            statistics (N, df) stay the whole table's, so a filter does not change a term's weight.

    The statement's parameters: `text_depth`, `common`, `normalization`.
    """
    where = sql.SQL(" AND ({})").format(condition) if condition is not None else sql.SQL("")
    return sql.SQL(
        "terms AS (SELECT lexeme, (SELECT count(*) FROM {t} WHERE {column} @@ lexeme) AS df FROM"
        " unnest(coalesce(string_to_array(({query})::text, ' | '), '{{}}')::tsquery[]) AS lexeme),"
        " total AS (SELECT count(*)::float8 AS n FROM {t}),"
        " kept AS (SELECT lexeme, ln(1 + (total.n - df + 0.5) / (df + 0.5)) AS idf FROM terms, total"
        " WHERE df > 0 AND (df <= %(common)s * total.n OR df = (SELECT min(df) FROM terms WHERE df > 0))),"
        " txt AS (SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank, score FROM ("
        "SELECT d.id, sum(kept.idf * d.tf) AS score FROM kept CROSS JOIN LATERAL ("
        "SELECT r.id, ts_rank(r.{column}, kept.lexeme, %(normalization)s)::float8 AS tf FROM {t} r"
        " WHERE r.{column} @@ kept.lexeme{where}) d"
        " GROUP BY d.id ORDER BY score DESC, d.id LIMIT %(text_depth)s) x)"
    ).format(query=query, column=sql.Identifier(fulltext.COLUMN), t=table, where=where)
