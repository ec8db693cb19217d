"""Full-text and hybrid search in pgvector tables: the generated tsvector column, CJK bigrams, reciprocal
rank fusion, the search modes through `embedpipe search`, and `evaluate_table` against the in-memory evaluation.

Against the real embedded PostgreSQL (the `pg_uri` session fixture).
"""

import json
import uuid

import numpy as np
import pandas as pd
import psycopg
import pytest

from embedpipe.cli import exits, main
from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
from embedpipe.vectorstore.fulltext import COLUMN, text_column
from embedpipe.vectorstore.hybrid import SearchSettings, rrf, search_table


@pytest.fixture
def table():
    return f"h_{uuid.uuid4().hex[:10]}"


def batch(ids, contents, dim=8, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorBatch(list(ids), vectors, list(contents), [json.dumps({"n": i}) for i in range(len(ids))])


def text_ids(uri, table, query, k=10):
    return [hit.id for hit in search_table(uri, table, query, None, SearchSettings(mode="text"), k=k)]


def test_rrf_on_a_hand_computed_example():
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60)
    # a: 1/61 + 1/62 = 0.032522; c: 1/63 + 1/61 = 0.032266; b and d: 1/62 = 0.016129 each, tie by id
    assert [ident for ident, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    weighted = rrf([["a", "b", "c"], ["c", "a", "d"]], k=60, weights=[1.0, 3.0])  # c: 1/63 + 3/61 beats a
    assert [ident for ident, _ in weighted][:2] == ["c", "a"]


def test_tsvector_follows_content_on_upsert(pg_uri, table):
    writer = PgVectorWriter(pg_uri, table)
    writer.write(batch(["a", "b"], ["aspirin lowers fever", "statins lower cholesterol"]))
    assert text_ids(pg_uri, table, "aspirin") == ["a"]
    writer.write(batch(["a", "c"], ["ibuprofen eases pain", "aspirin thins the blood"], seed=1))
    assert text_ids(pg_uri, table, "aspirin") == ["c"]  # a's old words are gone with its old content
    assert text_ids(pg_uri, table, "ibuprofen") == ["a"]
    assert text_ids(pg_uri, table, "cholesterols") == ["b"]  # english stems: cholesterols ~ cholesterol


def test_rows_written_before_the_column_existed_are_searchable(pg_uri, table):
    PgVectorWriter(pg_uri, table, index=IndexSettings(text_search="none")).write(
        batch(["old1", "old2"], ["vitamin d and bone density", "sleep and memory"])
    )
    exists, config = PgVectorWriter(pg_uri, table).run_transaction(lambda s: text_column(s, table))[0]
    assert exists and config is None
    with pytest.raises(ValueError, match="no full-text column"):
        text_ids(pg_uri, table, "vitamin")
    PgVectorWriter(pg_uri, table, index=IndexSettings(text_search="simple")).write(batch(["new"], ["vitamin c"]))
    assert sorted(text_ids(pg_uri, table, "vitamin")) == ["new", "old1"]
    assert text_ids(pg_uri, table, "memory") == ["old2"]
    with psycopg.connect(pg_uri) as conn:
        gin = conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s", (table, f"%gin ({COLUMN})%")
        ).fetchone()[0]
    assert gin == 1


def test_japanese_and_chinese_paragraphs_are_found_by_a_word_inside(pg_uri, table):
    PgVectorWriter(pg_uri, table).write(
        batch(
            ["ja1", "ja2", "zh1", "en1"],
            [
                "私は京都大学で物理学を研究しています。",
                "東京の天気は晴れです。",
                "我们在北京研究人工智能。",
                "Physics at Kyoto University",
            ],
        )
    )
    assert text_ids(pg_uri, table, "物理学") == ["ja1"]
    assert text_ids(pg_uri, table, "天気") == ["ja2"]
    assert text_ids(pg_uri, table, "人工智能") == ["zh1"]
    assert text_ids(pg_uri, table, "physics") == ["en1"]  # Latin words stay words
    assert text_ids(pg_uri, table, "the") == []  # stop words only: nothing to match, no error


def test_hybrid_sql_fuses_as_rrf_does(pg_uri, table):
    contents = [f"doc {i} " + " ".join(["aspirin"] * (i % 5)) + (" heart" if i % 3 == 0 else "") for i in range(40)]
    ids = [f"d{i:02d}" for i in range(40)]
    data = batch(ids, contents, dim=16, seed=3)
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(data)
    query, vector = "aspirin heart", data.embeddings[7]
    depth = dict(vector_depth=12, text_depth=12)
    vector_ranking = [h.id for h in search_table(pg_uri, table, query, vector, SearchSettings("vector"), k=12)]
    text_ranking = [h.id for h in search_table(pg_uri, table, query, None, SearchSettings("text"), k=12)]
    assert vector_ranking[0] == "d07" and len(text_ranking) == 12
    for weights in ((1.0, 1.0), (0.5, 2.0)):
        settings = SearchSettings("hybrid", rrf_k=10, vector_weight=weights[0], text_weight=weights[1], **depth)
        hits = search_table(pg_uri, table, query, vector, settings, k=15)
        expected = rrf([vector_ranking, text_ranking], k=10, weights=weights)[:15]
        assert [h.id for h in hits] == [ident for ident, _ in expected]
        assert [h.score for h in hits] == pytest.approx([score for _, score in expected])
        assert hits[0].content is not None and hits[0].metadata is not None


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="search mode"):
        SearchSettings(mode="keyword").check()
    with pytest.raises(ValueError, match="vector_depth"):
        SearchSettings(vector_depth=0).check()
    with pytest.raises(ValueError, match="text_search"):
        IndexSettings(text_search="english; DROP TABLE x").check()


def test_search_modes_through_the_command(pg_uri, table, capsys):
    from embedpipe.models import encode, load_model
    from embedpipe.prompts import resolve_prompts

    texts = ["Aspirin reduces the risk of heart attacks.", "Vitamin D supports bone health.", "Cats sleep a lot."]
    model = load_model("default")
    prompts = resolve_prompts("RETRIEVAL_DOCUMENT", model.prompts)
    vectors = np.asarray(encode(model, prompts.format_documents(texts, [""] * 3)), dtype="float32")
    kinds = [json.dumps({"kind": kind}) for kind in ("drug", "vitamin", "pet")]
    PgVectorWriter(pg_uri, table).write(VectorBatch(["asp", "vit", "cat"], vectors, texts, kinds))
    found = {}
    for mode in ("vector", "text", "hybrid"):
        argv = ["search", "aspirin heart", "--db", pg_uri, "--table", table, "--mode", mode, "-k", "2", "--json"]
        assert main(argv) == 0
        found[mode] = [hit["id"] for hit in json.loads(capsys.readouterr().out)]
    assert found["text"] == ["asp"]  # only the row with the words
    assert found["vector"][0] == "asp" and found["hybrid"][0] == "asp" and len(found["hybrid"]) == 2
    # a filter restricts text and hybrid search too (it was refused there before issue 17's bm25 branch)
    for mode in ("text", "hybrid"):
        argv = ["search", "aspirin heart", "--db", pg_uri, "--table", table, "--mode", mode, "--json"]
        assert main([*argv, "--filter", "kind in ('drug', 'pet')"]) == 0
        assert {hit["id"] for hit in json.loads(capsys.readouterr().out)} <= {"asp", "cat"}
        assert main([*argv, "--filter", "kind = 'vitamin'"]) == 0
        assert [hit["id"] for hit in json.loads(capsys.readouterr().out)] == ([] if mode == "text" else ["vit"])
        assert main([*argv, "--where", "kind=pet"]) == 0
        assert [hit["id"] for hit in json.loads(capsys.readouterr().out)] == ([] if mode == "text" else ["cat"])
    assert (
        main(["search", "x", "--db", pg_uri, "--table", table, "--mode", "hybrid", "--filter", "kind ~ 1"])
        == exits.BAD_INPUT
    )
    assert "column" in capsys.readouterr().err


def test_evaluate_table_matches_in_memory_evaluate(pg_uri, table, tiny_example_data, tmp_path, capsys):
    from embedpipe.evaluate import evaluate_model
    from embedpipe.vectorstore.evaluation import evaluate_table

    data = tiny_example_data
    corpus = pd.read_json(data / "corpus.jsonl", lines=True, dtype={"_id": str})
    corpus["title"] = corpus["title"].fillna("") if "title" in corpus else ""
    queries = pd.read_json(data / "queries.jsonl", lines=True, dtype={"_id": str})
    labels = pd.read_csv(data / "qrels" / "test.tsv", sep="\t", dtype={"query-id": str, "corpus-id": str})
    memory = evaluate_model("default", corpus, queries, labels, name="base")
    vectors = np.asarray(memory.corpus_embeddings, dtype="float32")
    contents = corpus.set_index("_id").loc[memory.corpus_ids, "text"].tolist()
    PgVectorWriter(pg_uri, table).write(VectorBatch(memory.corpus_ids, vectors, contents, [None] * len(contents)))

    exact = evaluate_table(pg_uri, table, queries, labels, SearchSettings("vector", exact=True))
    assert exact.metrics["ndcg@10"] > 0
    assert exact.metrics["ndcg@10"] == pytest.approx(memory.metrics["ndcg@10"], abs=1e-9)
    assert exact.metrics["recall@100"] == pytest.approx(memory.metrics["recall@100"], abs=1e-9)
    assert {q: m["ndcg@10"] for q, m in exact.per_query.items()} == pytest.approx(
        {q: m["ndcg@10"] for q, m in memory.per_query.items()}, abs=1e-9
    )

    out = tmp_path / "out"
    argv = ["evaluate", "--data", str(data), "--table", table, "--db", pg_uri, "--output-dir", str(out), "--exact"]
    assert main([*argv, "--search-mode", "vector", "--search-mode", "hybrid", "--search-mode", "text"]) == 0
    printed = capsys.readouterr().out
    assert "hybrid" in printed and "ndcg@10" in printed and (out / "report.html").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/vector/ndcg@10"] == pytest.approx(memory.metrics["ndcg@10"], abs=1e-6)
    assert 0 < metrics["test/text/ndcg@10"] <= 1 and 0 < metrics["test/hybrid/ndcg@10"] <= 1
    # the first two modes compared, labelled by their names (not "base" and "tuned")
    assert metrics["test/hybrid_minus_vector/ndcg@10"] == pytest.approx(
        metrics["test/hybrid/ndcg@10"] - metrics["test/vector/ndcg@10"], abs=1e-5
    )
    report = (out / "report.html").read_text()
    assert "vector NDCG@10" in report and "hybrid − vector" in report and "tuned" not in report
    assert f"searched in table {table} (vector, hybrid, text, exact)" in report and "exact cosine" not in report

    bad = tmp_path / "bad.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\n" + f"{queries['_id'][0]}\tnot-in-the-table\t1\n")
    assert main([*argv, "--test-labels", str(bad)]) == exits.BAD_INPUT
    assert f"{bad}:2" in capsys.readouterr().err


def test_text_search_leaves_out_common_query_terms(pg_uri, table):
    contents = [f"common word {i}" + (" rare" if i == 42 else "") for i in range(100)]
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(
        batch([f"r{i}" for i in range(100)], contents)
    )
    # "common" is in every row (above SearchSettings.common_fraction): only "rare" is searched
    assert text_ids(pg_uri, table, "common rare", k=50) == ["r42"]
    # a query of common terms only still searches its rarest
    assert len(text_ids(pg_uri, table, "common", k=50)) == 50


def test_text_ranking_weighs_rare_terms_by_idf(pg_uri, table):
    # "zebra" is in 2 of 40 rows, "apple" in 8: a row with one zebra outranks a row with one apple,
    # although ts_rank_cd (no idf) gives both the same score
    contents = [f"filler row {i}" for i in range(30)]
    contents += ["apple pie"] * 7 + ["apple tart", "zebra crossing", "zebra stripes"]
    ids = [f"r{i:02d}" for i in range(len(contents))]
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(batch(ids, contents))
    settings = SearchSettings("text", common_fraction=1.0)
    hits = search_table(pg_uri, table, "apple zebra", None, settings, k=40)
    assert {h.id for h in hits[:2]} == {"r38", "r39"} and len(hits) == 10
    assert hits[1].score > hits[2].score  # the idf gap, not a tie broken by id
    assert [h.id for h in search_table(pg_uri, table, "zebra apple", None, settings, k=2)] == ["r38", "r39"]


def test_text_ranking_rises_with_term_frequency_and_saturates(pg_uri, table):
    counts = (1, 2, 3, 8, 16)
    # the same other words in every row (the default normalisation divides by the unique words), so only
    # the term's frequency differs
    contents = [" ".join(["heart"] * n + [f"pad{j}" for j in range(20)]) for n in counts]
    contents += [f"other text {i}" for i in range(20)]
    ids = [f"tf{n:02d}" for n in counts] + [f"o{i}" for i in range(20)]
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(batch(ids, contents))
    hits = search_table(pg_uri, table, "heart", None, SearchSettings("text"), k=10)
    assert [h.id for h in hits] == ["tf16", "tf08", "tf03", "tf02", "tf01"]
    score = {h.id: h.score for h in hits}
    # saturating: the second occurrence adds more than the ninth to sixteenth together
    assert score["tf02"] - score["tf01"] > score["tf16"] - score["tf08"] > 0
    assert score["tf16"] < 2 * score["tf01"]


def test_text_side_uses_the_gin_index_per_term(pg_uri, table):
    from psycopg import sql

    from embedpipe.vectorstore import fulltext
    from embedpipe.vectorstore.text_rank import text_ranking

    contents = [f"row {i} " + ("aspirin" if i % 50 == 0 else "placebo") for i in range(2000)]
    PgVectorWriter(pg_uri, table, index=IndexSettings(kind="none")).write(
        batch([f"g{i}" for i in range(2000)], contents)
    )
    ident = sql.Identifier(table)
    query = fulltext.or_query(fulltext.function_identifier(table), "english", sql.Placeholder("text"))
    statement = (
        sql.SQL("EXPLAIN (ANALYZE, FORMAT TEXT) WITH ") + text_ranking(ident, query) + sql.SQL(" SELECT * FROM txt")
    )
    params = {"text": "aspirin row", "text_depth": 10, "common": 0.5, "normalization": 1}
    with psycopg.connect(pg_uri) as conn:
        conn.execute("ANALYZE " + table)
        plan = "\n".join(row[0] for row in conn.execute(statement, params))
    # each term's candidates come from a bitmap scan of the GIN index (parameterised by the term, one loop
    # per kept term), never `@@` evaluated on every row
    assert f"Bitmap Heap Scan on {table} r " in plan and "Index Cond: (content_tsv @@ " in plan, plan
    assert f"Seq Scan on {table} r " not in plan, plan
