"""Evaluation benchmark: SciFact NDCG@10 of the packaged all-MiniLM-L6-v2, and exact search memory.

1. Quality: `embedpipe.evaluate` on the whole of ../shared/datasets/scifact (5,183 documents, 300 test
   queries); MTEB publishes NDCG@10 = 0.6451 for this model. Deterministic, so run once; timed; the
   same run is also scored by trec_eval itself (pytrec_eval) as a cross-check.
2. Search, alternated A B A B ... (--rounds each) on random normalised vectors:
     A  embedpipe.retrieval.top_k (chunked matrix products, running top-k)
     B  naive: one full queries × corpus score matrix, then torch.topk
   medians of time and of peak extra memory (RSS sampled every 5 ms).
3. Scale: top_k alone on --big-docs × --big-queries (default 1 M × 10 k, 384-d), where the naive score
   matrix would need big-docs × big-queries × 4 bytes; peak extra memory reported against that.

The last line is one JSON object of the figures.

    python benchmarks/evaluate_scifact.py [--rounds 3] [--docs 100000] [--queries 2000] [--big-docs 1000000] [--big-queries 10000]
        [--skip-quality] [--skip-search] (--big-docs 0 skips the scale run)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"


class PeakRSS:
    """Peak resident memory above the starting point while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.extra_mb = (self.peak - self.start) / 2**20


def naive_top_k(queries, corpus, k):
    import torch

    scores = torch.from_numpy(queries) @ torch.from_numpy(corpus).T
    values, indices = torch.topk(scores, k, dim=1)
    return values.numpy(), indices.numpy()


def random_unit(rows, dim, seed):
    import numpy as np

    x = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def quality() -> dict:
    import tempfile

    from embedpipe.evaluate import run_evaluation
    from embedpipe.prepare import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_data(
            str(SCIFACT / "corpus.jsonl"),
            str(SCIFACT / "queries.jsonl"),
            str(SCIFACT / "qrels" / "train.tsv"),
            test_labels_path=str(SCIFACT / "qrels" / "test.tsv"),
        )
        paths = {name: f"{tmp}/{name}.parquet" for name in ("corpus", "queries", "test")}
        prepared.write(paths["corpus"], paths["queries"], {"test": paths["test"]})
        started = time.monotonic()
        evaluations, _, _ = run_evaluation(paths["corpus"], paths["queries"], paths["test"], base_model="default")
        seconds = time.monotonic() - started
    metrics = evaluations[0].metrics
    # Cross-check: trec_eval itself (pytrec_eval) on the same run and labels.
    import pytrec_eval

    from embedpipe.evaluate import qrels_from_labels

    qrels = qrels_from_labels(prepared.labels["test"])
    run = {q: dict(docs) for q, docs in evaluations[0].run.items()}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    trec_ndcg = sum(r["ndcg_cut_10"] for r in reference.values()) / len(reference)
    return {
        "scifact_ndcg@10": round(metrics["ndcg@10"], 4),
        "scifact_ndcg@10_trec_eval": round(trec_ndcg, 4),
        "scifact_ndcg@10_abs_diff": abs(trec_ndcg - metrics["ndcg@10"]),
        "scifact_recall@100": round(metrics["recall@100"], 4),
        "scifact_queries": len(evaluations[0].per_query),
        "scifact_seconds": round(seconds, 1),
    }


def search(args, top_k) -> dict:
    """Chunked vs naive exact search on random vectors, alternated A B A B ..."""
    corpus = random_unit(args.docs, args.dim, 1)
    queries = random_unit(args.queries, args.dim, 2)
    times = {"chunked": [], "naive": []}
    memory = {"chunked": [], "naive": []}
    for r in range(args.rounds):
        for name, fn in (("chunked", top_k), ("naive", naive_top_k)):
            with PeakRSS() as peak:
                started = time.perf_counter()
                _, indices = fn(queries, corpus, 100)
                elapsed = time.perf_counter() - started
            times[name].append(elapsed)
            memory[name].append(peak.extra_mb)
            if name == "chunked":
                chunked_indices = indices
            else:
                assert (indices[:, 0] == chunked_indices[:, 0]).all(), (
                    "chunked and naive disagree on the nearest neighbour"
                )
            print(f"round {r + 1} {name:<8} {elapsed:6.2f} s  peak +{peak.extra_mb:7.1f} MiB", flush=True)
    figures = {
        "search_docs": args.docs,
        "search_queries": args.queries,
        "chunked_seconds": round(statistics.median(times["chunked"]), 2),
        "naive_seconds": round(statistics.median(times["naive"]), 2),
        "chunked_peak_mib": round(statistics.median(memory["chunked"]), 1),
        "naive_peak_mib": round(statistics.median(memory["naive"]), 1),
        "score_matrix_mib": round(args.docs * args.queries * 4 / 2**20, 1),
    }
    figures["chunked_vs_naive_speed"] = round(figures["naive_seconds"] / figures["chunked_seconds"], 2)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--big-docs", type=int, default=1_000_000)
    parser.add_argument("--big-queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-search", action="store_true", help="skip the chunked vs naive comparison")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Progress (documents embedded, ETA) on stderr; the figures stay on stdout.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from embedpipe.retrieval import top_k

    figures = {"benchmark": "evaluate_scifact"}
    if not args.skip_quality:
        figures.update(quality())
        print(
            f"SciFact test: NDCG@10 = {figures['scifact_ndcg@10']} over {figures['scifact_queries']} queries "
            f"in {figures['scifact_seconds']} s (MTEB: 0.6451)",
            flush=True,
        )

    if not args.skip_search:
        figures.update(search(args, top_k))

    if args.big_docs:
        corpus = random_unit(args.big_docs, args.dim, 3)
        queries = random_unit(args.big_queries, args.dim, 4)
        with PeakRSS() as peak:
            started = time.perf_counter()
            top_k(queries, corpus, 100)
            elapsed = time.perf_counter() - started
        figures.update(
            {
                "big_docs": args.big_docs,
                "big_queries": args.big_queries,
                "big_seconds": round(elapsed, 1),
                "big_peak_extra_mib": round(peak.extra_mb, 1),
                "big_score_matrix_mib": round(args.big_docs * args.big_queries * 4 / 2**20, 1),
            }
        )
        print(
            f"scale: {args.big_docs:,} docs x {args.big_queries:,} queries in {elapsed:.0f} s, peak +{peak.extra_mb:.0f} MiB "
            f"(a full score matrix would be {figures['big_score_matrix_mib']:,.0f} MiB)",
            flush=True,
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
