"""Fine-tuning benchmark: base vs tuned NDCG@10 of the packaged all-MiniLM-L6-v2, on CPU.

1. SciFact (../shared/datasets/scifact): fine-tune on the train labels (919 pairs, 809 queries), score
   base and tuned on the test labels (300 queries) over the whole corpus (5,183 documents).
2. JaQuAD (../shared/datasets/jaquad, Japanese): fine-tune on the first --jaquad-train-pairs train
   labels; score on the first --jaquad-test-queries test queries over a corpus of every test-split
   document (`de-*`, 1,431) plus the documents of the train slice.

Test labels are never trained on. Scores come from `embedpipe.evaluate.evaluate_model`; training from
`embedpipe.fine_tune.fine_tune`. The last stdout line is one JSON object of the figures.

    python benchmarks/fine_tune.py [--steps 30] [--batch-size 32] [--lr-multiplier 2] [--hard-negatives]
        [--only scifact|jaquad]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"

log = logging.getLogger("benchmarks.fine_tune")


def jaquad_slice(target: Path, train_pairs: int, test_queries: int) -> Path:
    """Writes a BEIR folder: first `train_pairs` train labels, first `test_queries` test queries."""
    import pandas as pd

    source = DATASETS / "jaquad"
    train = pd.read_csv(source / "qrels" / "train.tsv", sep="\t", dtype=str).head(train_pairs)
    test = pd.read_csv(source / "qrels" / "test.tsv", sep="\t", dtype=str)
    test = test[test["query-id"].isin(test["query-id"].drop_duplicates().head(test_queries))]
    corpus = pd.read_json(source / "corpus.jsonl", lines=True, dtype=False)
    corpus = corpus[corpus["_id"].isin(set(train["corpus-id"])) | corpus["_id"].str.startswith("de-")]
    queries = pd.read_json(source / "queries.jsonl", lines=True, dtype=False)
    queries = queries[queries["_id"].isin(set(train["query-id"]) | set(test["query-id"]))]
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    corpus.to_json(target / "corpus.jsonl", orient="records", lines=True, force_ascii=False)
    queries.to_json(target / "queries.jsonl", orient="records", lines=True, force_ascii=False)
    train.to_csv(target / "qrels" / "train.tsv", sep="\t", index=False)
    test.to_csv(target / "qrels" / "test.tsv", sep="\t", index=False)
    return target


def run_dataset(name: str, data: Path, work: Path, args) -> dict:
    import pandas as pd

    from embedpipe.evaluate import evaluate_model
    from embedpipe.fine_tune import FineTuneSettings, fine_tune
    from embedpipe.prepare import SPLITS, prepare_data

    started = time.monotonic()
    prepared = prepare_data(
        str(data / "corpus.jsonl"),
        str(data / "queries.jsonl"),
        str(data / "qrels" / "train.tsv"),
        str(data / "qrels" / "test.tsv"),
    )
    out = work / name
    paths = {split: str(out / f"{split}_labels.parquet") for split in SPLITS}
    prepared.write(str(out / "corpus.parquet"), str(out / "queries.parquet"), paths)
    corpus = pd.read_parquet(out / "corpus.parquet")
    queries = pd.read_parquet(out / "queries.parquet")
    test = pd.read_parquet(paths["test"])
    train = pd.read_parquet(paths["train"])
    log.info("%s: %d documents, %d train pairs, %d test pairs", name, len(corpus), len(train), len(test))

    t = time.monotonic()
    base = evaluate_model("default", corpus, queries, test, name="base", task_type=args.task_type)
    base_seconds = time.monotonic() - t

    t = time.monotonic()
    tuned_dir = out / "model"
    settings = FineTuneSettings(
        base_model="default",
        task_type=args.task_type,
        batch_size=args.batch_size,
        train_steps=args.steps,
        learning_rate_multiplier=args.lr_multiplier,
        seed=args.seed,
        max_seq_length=args.max_seq_length,
        mine_hard_negatives=args.hard_negatives,
    )
    result = fine_tune(
        str(out / "corpus.parquet"), str(out / "queries.parquet"), paths["train"], str(tuned_dir), settings
    )
    train_seconds = time.monotonic() - t

    t = time.monotonic()
    tuned = evaluate_model(str(tuned_dir), corpus, queries, test, name="tuned", task_type=args.task_type)
    tuned_seconds = time.monotonic() - t
    figures = {
        "documents": len(corpus),
        "train_pairs": len(train),
        "test_queries": int(test["query-id"].nunique()),
        "base_ndcg@10": round(base.metrics["ndcg@10"], 4),
        "tuned_ndcg@10": round(tuned.metrics["ndcg@10"], 4),
        "gain": round(tuned.metrics["ndcg@10"] - base.metrics["ndcg@10"], 4),
        "train_loss_first": round(result.metrics["train_loss_first"], 4),
        "train_loss_last": round(result.metrics["train_loss"], 4),
        "train_seconds": round(train_seconds, 1),
        "samples_per_second": result.metrics["samples_per_second"],
        "base_eval_seconds": round(base_seconds, 1),
        "tuned_eval_seconds": round(tuned_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    log.info("%s: %s", name, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="train_steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch_size (default: %(default)s)")
    parser.add_argument("--lr-multiplier", type=float, default=2.0, help="times 2e-5 (default: %(default)s)")
    parser.add_argument(
        "--max-seq-length", type=int, default=0, help="training tokens per text, 0 = model's (default: %(default)s)"
    )
    parser.add_argument("--hard-negatives", action="store_true", help="mine one hard negative per pair")
    parser.add_argument("--task-type", default="RETRIEVAL_QUERY")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jaquad-train-pairs", type=int, default=1500, help="(default: %(default)s)")
    parser.add_argument("--jaquad-test-queries", type=int, default=300, help="(default: %(default)s)")
    parser.add_argument("--only", choices=("scifact", "jaquad"), help="run one dataset")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="embedpipe-ft-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "scifact"):
            results["scifact"] = run_dataset("scifact", DATASETS / "scifact", work, args)
        if args.only in (None, "jaquad"):
            data = jaquad_slice(work / "jaquad-slice", args.jaquad_train_pairs, args.jaquad_test_queries)
            results["jaquad"] = run_dataset("jaquad", data, work, args)
    summary = {
        "benchmark": "fine_tune",
        "model": "all-MiniLM-L6-v2 (packaged)",
        "device": "cpu",
        "settings": {
            "train_steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": 2e-5 * args.lr_multiplier,
            "max_seq_length": args.max_seq_length or "model's",
            "hard_negatives": args.hard_negatives,
            "task_type": args.task_type,
            "seed": args.seed,
            "jaquad_train_pairs": args.jaquad_train_pairs,
            "jaquad_test_queries": args.jaquad_test_queries,
        },
        **results,
        "tuned_beats_base": all(r["tuned_ndcg@10"] > r["base_ndcg@10"] for r in results.values()),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
