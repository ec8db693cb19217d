"""Whole embedding jobs on the same documents, same model (packaged all-MiniLM-L6-v2), same machine.

Contenders, alternated A B C D each round (--rounds rounds), every run a whole job including model load:
  A  ours: `embedpipe.embed` job (RunInference + our ModelHandler) on Beam's local runner (FnApiRunner)
  B  plain: read the JSONL, `SentenceTransformer(...)`, `encode(batch_size=32)`, write Parquet
  C  Beam `MLTransform(SentenceTransformerEmbeddings)` on the same runner, writing Parquet
  D  ours, incremental: the corpus with --changed of the documents edited, given A's first output
  E  ours on Beam's local runner with 2 worker processes (--direct_num_workers 2, multi_processing)
     (--workers-contender; compared with A)

--busy-cores N runs N single-core busy loops (other Python processes) beside every contender, from the
first warm-up to the end, and stops them by PID: a CPU shared with an unrelated process.

All embed the document as MiniLM's document prompt formats it ("{title} {text}"). Prints each run, the
medians and the ratios; the last line is one JSON object of the figures.

    python benchmarks/embed_corpus.py [--docs 5000] [--rounds 3] [--changed 0.01] [--skip-mltransform]
        [--skip-incremental] [--workers-contender] [--busy-cores N]
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
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def write_corpus(source: Path, target: Path, docs: int, changed: float = 0.0) -> int:
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:docs]
    step = max(1, round(1 / changed)) if changed else 0
    edited = 0
    for i, row in enumerate(rows):
        if step and i % step == 0:
            row["text"] += " (revised)"
            edited += 1
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return edited


def run_ours(corpus: Path, output: Path, previous: Path | None = None, beam_args: tuple[str, ...] = ()) -> dict:
    from embedpipe.embed.job import prepare_config, run_job

    shutil.rmtree(output, ignore_errors=True)
    result = run_job(prepare_config(str(corpus), str(output), previous=str(previous or "")), list(beam_args))
    return result.metrics


TWO_WORKERS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def start_busy_loops(count: int) -> list:
    """`count` Python processes that each keep one core busy until stopped."""
    import subprocess

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy_loops(processes: list) -> None:
    for process in processes:
        process.kill()
        process.wait()


def run_plain(corpus: Path, output: Path) -> dict:
    import pandas as pd
    from sentence_transformers import SentenceTransformer

    from embedpipe.models import packaged_model_path

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    texts = [f"{r.get('title') or ''} {r['text']}".strip() for r in rows]
    vectors = model.encode(texts, batch_size=32, prompt="", normalize_embeddings=True)
    output.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"id": [r["_id"] for r in rows], "embedding": list(vectors), "content": [r["text"] for r in rows]}
    ).to_parquet(output / "vectors.parquet")
    return {"documents_embedded": len(rows)}


def run_mltransform(corpus: Path, output: Path) -> dict:
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.huggingface import SentenceTransformerEmbeddings
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from embedpipe.models import packaged_model_path

    shutil.rmtree(output, ignore_errors=True)
    artifacts = tempfile.mkdtemp(prefix="mltransform-")
    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("content", pa.string())])

    def to_input(line: str) -> dict:
        r = json.loads(line)
        return {"id": r["_id"], "content": r["text"], "text": f"{r.get('title') or ''} {r['text']}".strip()}

    with beam.Pipeline(runner=FnApiRunner()) as p:
        (
            p
            | beam.io.ReadFromText(str(corpus))
            | beam.Map(to_input)
            | MLTransform(write_artifact_location=artifacts).with_transform(
                SentenceTransformerEmbeddings(model_name=str(packaged_model_path()), columns=["text"])
            )
            | beam.Map(lambda r: {"id": r["id"], "embedding": [float(x) for x in r["text"]], "content": r["content"]})
            | beam.io.WriteToParquet(str(output / "vectors"), schema, file_name_suffix=".parquet")
        )
    shutil.rmtree(artifacts, ignore_errors=True)
    return {}


def budget_description() -> str:
    from embedpipe.threads import thread_budget

    return thread_budget().describe()


def timed(fn, *args, **kwargs) -> tuple[float, dict]:
    started = time.monotonic()
    extra = fn(*args, **kwargs)
    return time.monotonic() - started, extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SCIFACT), help="BEIR corpus.jsonl (default: SciFact, %(default)s)")
    parser.add_argument("--docs", type=int, default=5000, help="documents per job (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each contender, alternated (default: %(default)s)"
    )
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share of documents edited for the incremental run"
    )
    parser.add_argument("--skip-mltransform", action="store_true", help="leave out contender C")
    parser.add_argument("--skip-incremental", action="store_true", help="leave out contender D")
    parser.add_argument(
        "--workers-contender", action="store_true", help="add contender E: ours with 2 worker processes"
    )
    parser.add_argument(
        "--busy-cores", type=int, default=0, help="single-core busy loops beside every contender (default: 0)"
    )
    args = parser.parse_args(argv)
    busy = start_busy_loops(args.busy_cores)
    try:
        return measure(args)
    finally:
        stop_busy_loops(busy)


def measure(args) -> int:
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    corpus, edited_corpus = work / "corpus.jsonl", work / "corpus-edited.jsonl"
    write_corpus(Path(args.corpus), corpus, args.docs)
    edited = write_corpus(Path(args.corpus), edited_corpus, args.docs, args.changed)
    print(
        f"{args.docs} documents, {edited} edited for the incremental run; torch threads {torch.get_num_threads()}; "
        f"{args.busy_cores} busy core(s) beside",
        flush=True,
    )

    contenders = {
        "A_ours": lambda: run_ours(corpus, work / "a"),
        "B_plain_encode": lambda: run_plain(corpus, work / "b"),
    }
    if not args.skip_mltransform:
        contenders["C_mltransform"] = lambda: run_mltransform(corpus, work / "c")
    if not args.skip_incremental:
        contenders["D_ours_incremental"] = lambda: run_ours(edited_corpus, work / "d", previous=work / "a-first")
    if args.workers_contender:
        contenders["E_ours_2_workers"] = lambda: run_ours(corpus, work / "e", beam_args=TWO_WORKERS)

    # One untimed warm-up job of each kind on a few documents: imports and first-call set-up are paid
    # once per process, not by whichever contender happens to run first.
    warm = work / "warm.jsonl"
    write_corpus(Path(args.corpus), warm, 20)
    run_ours(warm, work / "warm-a")
    run_plain(warm, work / "warm-b")
    if not args.skip_mltransform:
        run_mltransform(warm, work / "warm-c")

    times: dict[str, list[float]] = {name: [] for name in contenders}
    details: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            seconds, extra = timed(run)
            if name == "A_ours" and not (work / "a-first").exists():
                shutil.copytree(work / "a", work / "a-first")  # the previous run the incremental runs start from
            times[name].append(seconds)
            details[name] = {k: v for k, v in (extra or {}).items() if k != "seconds"}
            print(f"round {round_ + 1} {name:<20} {seconds:8.1f} s  {json.dumps(details[name])}", flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {"ours_vs_plain_encode": medians["B_plain_encode"] / medians["A_ours"]}
    if "C_mltransform" in medians:
        ratios["ours_vs_mltransform"] = medians["C_mltransform"] / medians["A_ours"]
    if "D_ours_incremental" in medians:
        ratios["incremental_speedup"] = medians["A_ours"] / medians["D_ours_incremental"]
    if "E_ours_2_workers" in medians:
        ratios["two_workers_vs_one"] = medians["A_ours"] / medians["E_ours_2_workers"]
    print("\nmedians: " + ", ".join(f"{k} {v:.1f} s" for k, v in medians.items()))
    print("ratios (>1 = ours faster): " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    shutil.rmtree(work, ignore_errors=True)
    figures = {
        "benchmark": "embed_corpus",
        "docs": args.docs,
        "rounds": args.rounds,
        "changed": args.changed,
        "busy_cores": args.busy_cores,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, thread budget {budget_description()}",
        "seconds": times,
        "medians_s": medians,
        "ratios": ratios,
        "incremental_run": details.get("D_ours_incremental", {}),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
