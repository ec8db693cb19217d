"""The validation curve that chose fine_tune's `validation_steps` / `early_stopping_patience` defaults.

Trains on a BEIR folder's TRAIN labels only (qrels/train.tsv; qrels/test.tsv is never opened), with the
automatic validation split (10 % of the train queries, by query), evaluating validation NDCG@10 every
`--validation-steps` with patience 0 (the whole curve), then says which step each patience would have
stopped at and saved. Writes the curve and that table as JSON.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fine_tune_defaults.py ../shared/datasets/scifact \\
        --train-steps 100 --validation-steps 10 --max-seq-length 128 --out /tmp/defaults.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def prepared_train(folder: Path, out: Path) -> dict[str, str]:
    """corpus, queries and the train labels as Parquet (the shape prepare_data writes)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    corpus = pd.read_json(folder / "corpus.jsonl", lines=True, dtype={"_id": str})
    queries = pd.read_json(folder / "queries.jsonl", lines=True, dtype={"_id": str})
    labels = pd.read_csv(folder / "qrels" / "train.tsv", sep="\t", dtype={"query-id": str, "corpus-id": str})
    corpus[["_id", "title", "text"]].to_parquet(out / "corpus.parquet")
    queries[["_id", "text"]].to_parquet(out / "queries.parquet")
    labels[["query-id", "corpus-id", "score"]].to_parquet(out / "train_labels.parquet")
    return {
        k: str(out / f"{k.removesuffix('_path')}.parquet")
        for k in ("corpus_path", "queries_path", "train_labels_path")
    }


def what_patience_would_do(curve: list[list[float]], patience: int) -> dict[str, float]:
    from embedpipe.fine_tune.early_stop import ValidationCurve

    tracker = ValidationCurve(patience)
    for step, score in curve:
        tracker.record(int(step), score)
        if tracker.should_stop:
            break
    return {
        "patience": patience,
        "stopped_at": tracker.points[-1][0],
        "chosen": tracker.best_step,
        "ndcg": tracker.best_score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--validation-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate-multiplier", type=float, default=1.0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--work", default="/tmp/fine_tune_defaults")
    parser.add_argument("--out", default="fine_tune_defaults.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from embedpipe.fine_tune import fine_tune

    work = Path(args.work)
    paths = prepared_train(Path(args.data), work / "prepared")
    started = time.monotonic()
    result = fine_tune(
        **paths,
        output_dir=str(work / "model"),
        train_steps=args.train_steps,
        validation_steps=args.validation_steps,
        early_stopping_patience=0,
        batch_size=args.batch_size,
        learning_rate_multiplier=args.learning_rate_multiplier,
        max_seq_length=args.max_seq_length,
        device="cpu",
    )
    curve = result.metadata["validation_ndcg_curve"]
    report = {
        "data": args.data,
        "settings": vars(args),
        "seconds": round(time.monotonic() - started, 1),
        "train_seconds": result.metrics["train_seconds"],
        "validation": {k: result.metadata[k] for k in ("validation_split", "validation_queries", "validation_corpus")},
        "curve": curve,
        "patience": [what_patience_would_do(curve, p) for p in (1, 2, 3, 5)],
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))  # one JSON object on the last line, as the other benchmarks


if __name__ == "__main__":
    main()
