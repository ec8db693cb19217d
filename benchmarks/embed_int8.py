"""The int8 CPU backend against fp32: whole embedding jobs (speed), and SciFact NDCG@10 (quality).

1. Speed, alternated A B C each round (--rounds rounds), same 5,000 SciFact documents, same model (the
   packaged all-MiniLM-L6-v2), every run a whole job including model load:
     A  plain fp32: read the JSONL, `SentenceTransformer(...)`, `encode(batch_size=32)`, write Parquet
     B  ours, torch backend: the `embedpipe.embed` job on Beam's local runner (fp32)
     C  ours, onnx-int8 backend: the same job; the int8 cache is emptied before each run, so every run
        pays for preparing the model (export, fusion, quantization) as a job on a fresh worker does
   One untimed warm-up job of each kind on 20 documents first (imports, first-call set-up).
2. Quality: `embedpipe.evaluate.evaluate_model` on all of SciFact (5,183 documents, 300 test queries)
   with the fp32 model and with the int8 model (MTEB publishes NDCG@10 0.6451 for fp32), the mean cosine
   between the two corpora's vectors, and (--naive) torch's own dynamic int8 quantization of every Linear
   for comparison.

The last line is one JSON object of the figures.

    python benchmarks/embed_int8.py [--docs 5000] [--rounds 3] [--skip-speed] [--skip-quality] [--no-naive]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"
sys.path.insert(0, str(REPO / "benchmarks"))

from embed_corpus import run_plain, write_corpus  # noqa: E402 - the same plain contender as embed_corpus.py


def run_job_with(backend: str, corpus: Path, output: Path) -> dict:
    from embedpipe.embed.job import prepare_config, run_job
    from embedpipe.embed.settings import ModelSettings

    shutil.rmtree(output, ignore_errors=True)
    if backend == "onnx-int8":
        shutil.rmtree(os.environ["EMBEDPIPE_CACHE_DIR"], ignore_errors=True)  # pay for preparation every run
    return run_job(prepare_config(str(corpus), str(output), model=ModelSettings(backend=backend))).metrics


def preparation_seconds() -> float:
    found = list(Path(os.environ["EMBEDPIPE_CACHE_DIR"]).glob("onnx-int8/*/prepared.json"))
    return json.loads(found[0].read_text())["seconds"] if found else float("nan")


def speed(args, work: Path) -> dict:
    corpus = work / "corpus.jsonl"
    write_corpus(Path(args.corpus), corpus, args.docs)
    warm = work / "warm.jsonl"
    write_corpus(Path(args.corpus), warm, 20)
    contenders = {
        "A_plain_fp32_encode": lambda out: run_plain(corpus, out),
        "B_ours_torch": lambda out: run_job_with("torch", corpus, out),
        "C_ours_onnx_int8": lambda out: run_job_with("onnx-int8", corpus, out),
    }
    run_plain(warm, work / "warm-a")
    run_job_with("torch", warm, work / "warm-b")
    run_job_with("onnx-int8", warm, work / "warm-c")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    preparation: list[float] = []
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            started = time.monotonic()
            extra = run(work / name)
            seconds = time.monotonic() - started
            times[name].append(seconds)
            if name == "C_ours_onnx_int8":
                preparation.append(preparation_seconds())
            shown = {k: v for k, v in (extra or {}).items() if k in ("documents_embedded", "documents_per_second")}
            print(f"round {round_ + 1} {name:<20} {seconds:8.1f} s  {json.dumps(shown)}", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "int8_vs_plain_fp32_encode": medians["A_plain_fp32_encode"] / medians["C_ours_onnx_int8"],
        "int8_vs_ours_torch": medians["B_ours_torch"] / medians["C_ours_onnx_int8"],
    }
    print("medians: " + ", ".join(f"{k} {v:.1f} s" for k, v in medians.items()), flush=True)
    print("ratios (>1 = int8 faster): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()), flush=True)
    return {
        "docs": args.docs,
        "rounds": args.rounds,
        "seconds": times,
        "medians_s": medians,
        "ratios": ratios,
        "int8_preparation_s": preparation,
    }


def quality(args) -> dict:
    import numpy as np

    from embedpipe.backend import load_int8_model
    from embedpipe.evaluate import evaluate_model
    from embedpipe.models import load_model
    from embedpipe.prepare import prepare_data

    prepared = prepare_data(
        str(SCIFACT / "corpus.jsonl"),
        str(SCIFACT / "queries.jsonl"),
        str(SCIFACT / "qrels" / "train.tsv"),
        test_labels_path=str(SCIFACT / "qrels" / "test.tsv"),
    )
    corpus, queries, labels = prepared.corpus, prepared.queries, prepared.labels["test"]
    models = {"fp32": lambda: load_model("default", device="cpu"), "onnx_int8": lambda: load_int8_model("default")}
    if args.naive:

        def naive():
            import torch

            return torch.ao.quantization.quantize_dynamic(
                load_model("default", device="cpu"), {torch.nn.Linear}, dtype=torch.qint8
            )

        models["torch_naive_dynamic_int8"] = naive
    results, vectors = {}, {}
    for name, load in models.items():
        started = time.monotonic()
        evaluation = evaluate_model("default", corpus, queries, labels, name=name, loaded_model=load())
        vectors[name] = np.asarray(evaluation.corpus_embeddings)
        results[name] = {
            "ndcg@10": round(evaluation.metrics["ndcg@10"], 4),
            "recall@100": round(evaluation.metrics["recall@100"], 4),
            "queries": len(evaluation.per_query),
            "seconds": round(time.monotonic() - started, 1),
        }
        if name != "fp32":
            cosine = (vectors[name] * vectors["fp32"]).sum(axis=1)
            results[name].update(
                mean_cosine_to_fp32=round(float(cosine.mean()), 4),
                min_cosine_to_fp32=round(float(cosine.min()), 4),
                ndcg10_minus_fp32=round(results[name]["ndcg@10"] - results["fp32"]["ndcg@10"], 4),
            )
        print(f"quality {name}: {json.dumps(results[name])}", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SCIFACT / "corpus.jsonl"), help="BEIR corpus.jsonl (default: SciFact)")
    parser.add_argument("--docs", type=int, default=5000, help="documents per job (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each contender, alternated (default: %(default)s)"
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="leave out torch's naive dynamic int8")
    args = parser.parse_args(argv)

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    os.environ["EMBEDPIPE_CACHE_DIR"] = str(work / "int8-cache")
    print(f"torch threads {torch.get_num_threads()}", flush=True)
    figures: dict = {
        "benchmark": "embed_int8",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
    }
    try:
        if not args.skip_speed:
            figures["speed"] = speed(args, work)
        if not args.skip_quality:
            figures["quality"] = quality(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
