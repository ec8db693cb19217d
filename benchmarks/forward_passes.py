"""How texts are cut into forward passes on CPU: the same texts, the same loaded model, only the passes differ.

Why the embedding job cuts its passes by padded tokens (`tokens_per_batch`) rather than by a number of
texts. Contenders, alternated each round (--rounds rounds), each embedding the same --docs SciFact
abstracts (`{title} {text}`) with the packaged all-MiniLM-L6-v2 already loaded (model load not timed):

  torch fp32 (`embedpipe.embed.handler.Encoder` over `SentenceTransformer`):
    texts32     passes of 32 texts, sorted by length (sentence-transformers' default; `tokens_per_batch=-1`)
    texts8      passes of 8 texts, sorted by length
    mlt5        unsorted groups of 5 texts, one pass each: the shape of MLTransform's passes here (Beam's
                adaptive BatchElements handed `encode` 100 batches for 500 of these abstracts, 1-7 texts
                each, mostly 5-6)
    tokens1024, tokens2048 (the default on CPU), tokens4096   passes of at most that many padded tokens
  onnx-int8 (`--backend onnx-int8`'s model), unless --skip-int8:
    int8_texts32 (its default), int8_tokens2048

Prints each run, the medians and the ratios to texts32 / int8_texts32; the last line is one JSON object.

    python benchmarks/forward_passes.py [--docs 500] [--rounds 3] [--skip-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SCIFACT), help="BEIR corpus.jsonl (default: SciFact)")
    parser.add_argument("--docs", type=int, default=500, help="documents per run (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each contender, alternated (default: %(default)s)"
    )
    parser.add_argument("--skip-int8", action="store_true", help="leave out the int8 contenders")
    args = parser.parse_args(argv)

    import torch

    from embedpipe.embed.handler import Encoder, load_encoder

    with open(args.corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()][: args.docs]
    texts = [f"{r.get('title') or ''} {r['text']}".strip() for r in rows]

    fp32 = load_encoder("default", device="cpu", precision="fp32")

    def passes(**options):
        encoder = Encoder(fp32.model, **options)
        return lambda: encoder.embed(texts)

    def unsorted_groups(size: int):
        encoder = Encoder(fp32.model, batch_size=size, tokens_per_batch=-1)
        return lambda: [
            encoder.model.encode(texts[i : i + size], batch_size=size, prompt="", show_progress_bar=False)
            for i in range(0, len(texts), size)
        ]

    contenders = {
        "texts32": passes(batch_size=32, tokens_per_batch=-1),
        "texts8": passes(batch_size=8, tokens_per_batch=-1),
        "mlt5": unsorted_groups(5),
        "tokens1024": passes(batch_size=32, tokens_per_batch=1024),
        "tokens2048": passes(batch_size=32, tokens_per_batch=2048),
        "tokens4096": passes(batch_size=32, tokens_per_batch=4096),
    }
    if not args.skip_int8:
        int8 = load_encoder("default", backend="onnx-int8")
        contenders["int8_texts32"] = lambda: Encoder(int8.model, batch_size=32, tokens_per_batch=-1).embed(texts)
        contenders["int8_tokens2048"] = lambda: Encoder(int8.model, batch_size=32, tokens_per_batch=2048).embed(texts)
    fp32.embed(texts[:40])  # untimed warm-up: first-call set-up
    if not args.skip_int8:
        int8.embed(texts[:40])

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
            print(f"round {round_ + 1} {name:<16} {times[name][-1]:7.2f} s", flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        f"{name}_vs_texts32": medians["texts32"] / medians[name]
        for name in medians
        if not name.startswith("int8") and name != "texts32"
    }
    if not args.skip_int8:
        ratios["int8_tokens2048_vs_int8_texts32"] = medians["int8_texts32"] / medians["int8_tokens2048"]
    print("\nmedians: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))
    print("speed-ups (>1 = faster than the reference): " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    print(
        json.dumps(
            {
                "benchmark": "forward_passes",
                "docs": len(texts),
                "rounds": args.rounds,
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
                "seconds": times,
                "medians_s": medians,
                "speedups": ratios,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
