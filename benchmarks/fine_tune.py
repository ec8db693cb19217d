"""Fine-tuning benchmark: contenders trained in alternation, gain in NDCG@10 over the base model.

The contenders (CONTENDERS, one table) all start from the packaged all-MiniLM-L6-v2:

- `plain`: a plain sentence-transformers script, written here with nothing of embedpipe's training code:
  MultipleNegativesRankingLoss, batch 32, learning rate 2e-5, the Trainer's defaults, 47 steps (one pass
  over 1,500 pairs): the recipe issue 19 compares against;
- `embedpipe`: `embedpipe.fine_tune.fine_tune` with its defaults, at the same number of pairs seen;
- `embedpipe-auto`: embedpipe with its automatic budget (AUTO_SETTINGS: the merge hook of the
  validation-driven training; pairs seen reported);
- `mined`, `guided`, `symmetric`, `guided-mined`: embedpipe's defaults plus one negatives option, at the
  same budget (for choosing the negatives defaults, with `--on validation`);
- `lr2e-05` … `lr0.00032`: embedpipe at that learning rate, no inner validation split (for choosing
  `VALIDATED_BASE_LEARNING_RATE`, with `--on validation`);
- `mined-8e-05`, `guided-8e-05`, `symmetric-8e-05`, `guided-mined-8e-05`: `lr8e-05` plus one negatives
  option (the option's effect alone: no inner split, no step choice).

Rounds alternate the contenders (A B C A B C ..., `--rounds`, 3 by default), each round with its own seed,
so that a slow spell of the shared machine does not fall on one contender; the figures are medians over
the rounds. Two data sets: SciFact (all train labels) and JaQuAD (the first `--train-pairs` train labels).

`--on test` (default) scores every test query (`--max-test-queries` for a quick run) with
`embedpipe.evaluate.evaluate_model`; test labels are read for that final scoring only. `--on validation`
never reads a test label: the train labels are split by query (`--validation-fraction`), contenders train
on the rest and are scored on the validation queries over a bounded corpus (the validation documents and
`--validation-corpus` others): how the negatives defaults were chosen.

The last stdout line is one JSON object: per data set and contender the median gain, the ratio of its gain
to `plain`'s, pairs seen, and whether the issue's goal (embedpipe's gain >= 1.5x plain's on both data sets,
never below the base) is met.

    python benchmarks/fine_tune.py [--only scifact|jaquad] [--rounds 3] [--max-test-queries N]
        [--contenders plain,embedpipe,embedpipe-auto] [--on test|validation] [--steps 47] [--max-seq-length 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
#: The plain recipe's budget: batch 32, 47 steps (one pass over 1,500 pairs).
BATCH_SIZE = 32
STEPS = 47
#: Issue 19's goal: embedpipe's gain at the same budget over the plain recipe's, on every data set.
GOAL_RATIO = 1.5
#: The settings of `embedpipe-auto`: train_steps is a ceiling (AUTO_CEILING x the budget); embedpipe's
#: validation-driven defaults decide where to stop (the automatic validation split by query, NDCG@10 every
#: fifth of the ceiling, early-stopping patience, the best step saved). Pairs seen are reported per run.
AUTO_CEILING = 4
AUTO_SETTINGS: dict = {"train_steps": AUTO_CEILING * STEPS}
#: The negatives options, each a contender on top of embedpipe's defaults and of `lr8e-05`.
NEGATIVES_OPTIONS: dict[str, dict] = {
    "mined": {"mine_hard_negatives": True},
    "guided": {"guided_loss": True},
    "symmetric": {"symmetric_loss": True},
    "guided-mined": {"guided_loss": True, "mine_hard_negatives": True},
}
#: The learning rates of the `lr<rate>` contenders.
LEARNING_RATES = (2e-5, 4e-5, 8e-5, 1.6e-4, 3.2e-4)

log = logging.getLogger("benchmarks.fine_tune")


@dataclass(frozen=True)
class Split:
    """One data set, prepared: Parquet paths and the tables the scoring reads.

    Attributes:
        name: "scifact" or "jaquad".
        folder: Folder of the prepared Parquet files.
        train_labels: Path of the labels the contenders train on.
        corpus, queries, score_labels: The tables `evaluate_model` scores with (test or validation labels).
    """

    name: str
    folder: Path
    train_labels: str
    corpus: object = field(repr=False)
    queries: object = field(repr=False)
    score_labels: object = field(repr=False)

    @property
    def corpus_path(self) -> str:
        return str(self.folder / "corpus.parquet")

    @property
    def queries_path(self) -> str:
        return str(self.folder / "queries.parquet")


@dataclass(frozen=True)
class Budget:
    """What every contender gets: steps of `batch_size` pairs; `max_seq_length` 0 = the model's (256)."""

    steps: int = STEPS
    batch_size: int = BATCH_SIZE
    max_seq_length: int = 0


@dataclass(frozen=True)
class Contender:
    """One way of training: `train(split, output_dir, seed, budget)` saves a model there, returns pairs seen."""

    name: str
    train: Callable[[Split, Path, int, Budget], int]


def train_plain(split: Split, output: Path, seed: int, budget: Budget) -> int:
    """The plain sentence-transformers script: MNRL, batch 32, lr 2e-5, 47 steps, the Trainer's defaults."""
    import pandas as pd
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from embedpipe.models import packaged_model_path  # the same starting weights, nothing else

    labels = pd.read_parquet(split.train_labels)
    labels = labels[labels["score"].astype(int) >= 1]
    queries = dict(zip(split.queries["_id"].astype(str), split.queries["text"]))
    corpus = split.corpus.set_index(split.corpus["_id"].astype(str))
    docs = corpus.loc[labels["corpus-id"].astype(str)]
    pairs = Dataset.from_dict(
        {
            "anchor": [queries[q] for q in labels["query-id"].astype(str)],
            "positive": [f"{t} {x}".strip() for t, x in zip(docs["title"].fillna(""), docs["text"].fillna(""))],
        }
    )
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    if budget.max_seq_length:
        model.max_seq_length = budget.max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / "checkpoints"),
        max_steps=budget.steps,
        per_device_train_batch_size=budget.batch_size,
        learning_rate=2e-5,
        seed=seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=pairs, loss=MultipleNegativesRankingLoss(model)
    ).train()
    model.save(str(output))
    return budget.steps * budget.batch_size


def embedpipe_contender(name: str, **settings) -> Contender:
    """`embedpipe.fine_tune.fine_tune` with its defaults, at the plain budget, and `settings` on top."""

    def train(split: Split, output: Path, seed: int, budget: Budget) -> int:
        from embedpipe.fine_tune import FineTuneSettings, fine_tune

        options = {
            "train_steps": budget.steps,
            "batch_size": budget.batch_size,
            "max_seq_length": budget.max_seq_length,
            "seed": seed,
            "device": "cpu",
            **settings,
        }
        if "train_steps" in settings:  # the auto contender's ceiling scales with the budget
            options["train_steps"] = settings["train_steps"] * budget.steps // STEPS
        result = fine_tune(
            split.corpus_path, split.queries_path, split.train_labels, str(output), FineTuneSettings(**options)
        )
        return int(result.metrics["train_steps"]) * options["batch_size"]

    return Contender(name, train)


CONTENDERS = {
    c.name: c
    for c in (
        Contender("plain", train_plain),
        embedpipe_contender("embedpipe"),
        embedpipe_contender("embedpipe-auto", **AUTO_SETTINGS),
        *(embedpipe_contender(name, **option) for name, option in NEGATIVES_OPTIONS.items()),
        # Learning rates (absolute), without an inner validation split (the pairs and steps of `plain`): how
        # VALIDATED_BASE_LEARNING_RATE was chosen, with `--on validation`.
        *(
            embedpipe_contender(f"lr{rate:g}", base_learning_rate=rate, validation_share=0.0)
            for rate in LEARNING_RATES
        ),
        # A negatives option at VALIDATED_BASE_LEARNING_RATE without an inner validation split: the same
        # training as `lr8e-05` plus that option (for choosing the options' defaults, with `--on validation`).
        *(
            embedpipe_contender(f"{name}-8e-05", base_learning_rate=8e-5, validation_share=0.0, **option)
            for name, option in NEGATIVES_OPTIONS.items()
        ),
    )
}
DEFAULT_CONTENDERS = ("plain", "embedpipe", "embedpipe-auto")


def alternation(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, contender) in the order they run: every contender once per round, in table order."""
    return [(r, name) for r in range(rounds) for name in names]


def run_rounds(
    names: Sequence[str], rounds: int, train_and_score: Callable[[str, int], dict], base: float
) -> dict[str, dict]:
    """Runs the alternation and summarises each contender.

    Args:
        names: Contender names, in table order.
        rounds: Rounds (each contender once per round).
        train_and_score: (name, round) -> {"ndcg@10": ..., "pairs_seen": ..., "seconds": ...}.
        base: The base model's NDCG@10.

    Returns:
        {name: summary} (`summarize`).
    """
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_, name in alternation(names, rounds):
        figures = train_and_score(name, round_)
        log.info("round %d %s: %s", round_, name, figures)
        runs[name].append(figures)
    return summarize(runs, base)


def summarize(runs: dict[str, list[dict]], base: float) -> dict[str, dict]:
    """Median NDCG@10 and gain per contender, the ratio of its gain to `plain`'s, pairs seen."""
    summary = {}
    for name, figures in runs.items():
        scores = [f["ndcg@10"] for f in figures]
        summary[name] = {
            "ndcg@10": [round(s, 4) for s in scores],
            "median_ndcg@10": round(statistics.median(scores), 4),
            "median_gain": round(statistics.median(scores) - base, 4),
            "worst_gain": round(min(scores) - base, 4),
            "pairs_seen": sorted({int(f["pairs_seen"]) for f in figures}),
            "median_seconds": round(statistics.median(f["seconds"] for f in figures), 1),
        }
    plain_gain = summary.get("plain", {}).get("median_gain")
    for entry in summary.values():
        entry["gain_ratio_to_plain"] = ratio(entry["median_gain"], plain_gain)
    return summary


def ratio(gain: float, plain_gain: float | None) -> float | None:
    """gain / plain_gain, None when there is no plain gain to compare with (absent, or not above 0)."""
    return round(gain / plain_gain, 3) if plain_gain is not None and plain_gain > 0 else None


def goal(results: dict[str, dict], contender: str = "embedpipe") -> dict:
    """Whether `contender` reached GOAL_RATIO x plain's gain on every data set and never fell below the base."""
    ratios = {name: r["contenders"].get(contender, {}).get("gain_ratio_to_plain") for name, r in results.items()}
    never_worse = {name: r["contenders"].get(contender, {}).get("worst_gain", -1) >= 0 for name, r in results.items()}
    met = (
        bool(results) and all(v is not None and v >= GOAL_RATIO for v in ratios.values()) and all(never_worse.values())
    )
    return {
        "goal": f"{contender}'s median gain >= {GOAL_RATIO}x plain's on every data set, never below the base",
        "ratios": ratios,
        "never_below_base": never_worse,
        "met": met,
    }


def json_line(summary: dict) -> str:
    """The last stdout line: the summary as one JSON object."""
    return json.dumps(summary, ensure_ascii=False, sort_keys=False)


def prepare_split(name: str, work: Path, args) -> Split:
    """Prepares one data set as Parquet; the labels scored on are the test labels or a validation split."""
    import pandas as pd

    from embedpipe.prepare import SPLITS, prepare_data

    source = DATASETS / name
    train = pd.read_csv(source / "qrels" / "train.tsv", sep="\t", dtype=str)
    if name == "jaquad":
        train = train.head(args.train_pairs)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    if args.on == "validation":
        # Test labels are never read: the train labels are split by query.
        ids = train["query-id"].drop_duplicates().sample(frac=1.0, random_state=args.seed)
        held = set(ids.head(max(1, int(len(ids) * args.validation_fraction))))
        score, train = train[train["query-id"].isin(held)], train[~train["query-id"].isin(held)]
    else:
        score = pd.read_csv(source / "qrels" / "test.tsv", sep="\t", dtype=str)
        if args.max_test_queries:
            score = score[score["query-id"].isin(score["query-id"].drop_duplicates().head(args.max_test_queries))]
    train.to_csv(folder / "train.tsv", sep="\t", index=False)
    score.to_csv(folder / "score.tsv", sep="\t", index=False)
    prepared = prepare_data(
        str(source / "corpus.jsonl"),
        str(source / "queries.jsonl"),
        str(folder / "train.tsv"),
        str(folder / "score.tsv"),
    )
    paths = {split: str(folder / f"{split}_labels.parquet") for split in SPLITS}
    prepared.write(str(folder / "corpus.parquet"), str(folder / "queries.parquet"), paths)
    corpus = pd.read_parquet(folder / "corpus.parquet")
    queries = pd.read_parquet(folder / "queries.parquet")
    score_labels = pd.read_parquet(paths["test"])
    if args.on == "validation" and args.validation_corpus:
        keep = set(score_labels["corpus-id"].astype(str))
        others = corpus[~corpus["_id"].astype(str).isin(keep)].sample(
            min(args.validation_corpus, len(corpus) - len(keep)), random_state=args.seed
        )
        corpus = corpus[corpus["_id"].astype(str).isin(keep)]
        corpus = pd.concat([corpus, others])
    return Split(name, folder, paths["train"], corpus, queries, score_labels)


def run_dataset(name: str, work: Path, args) -> dict:
    from embedpipe.evaluate import evaluate_model

    split = prepare_split(name, work, args)
    log.info(
        "%s: %d documents scored over, %d queries", name, len(split.corpus), split.score_labels["query-id"].nunique()
    )
    base = evaluate_model("default", split.corpus, split.queries, split.score_labels, name="base").metrics["ndcg@10"]

    def train_and_score(contender: str, round_: int) -> dict:
        output = work / f"{name}-{contender}-{round_}"
        started = time.monotonic()
        budget = Budget(args.steps, BATCH_SIZE, args.max_seq_length)
        pairs_seen = CONTENDERS[contender].train(split, output, args.seed + round_, budget)
        tuned = evaluate_model(str(output), split.corpus, split.queries, split.score_labels, name="tuned")
        return {"ndcg@10": tuned.metrics["ndcg@10"], "pairs_seen": pairs_seen, "seconds": time.monotonic() - started}

    return {
        "documents": len(split.corpus),
        "queries_scored": int(split.score_labels["query-id"].nunique()),
        "base_ndcg@10": round(base, 4),
        "contenders": run_rounds(args.contenders, args.rounds, train_and_score, base),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("scifact", "jaquad"), help="run one data set")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default: %(default)s)")
    parser.add_argument(
        "--contenders",
        type=lambda text: [c for c in text.split(",") if c],
        default=list(DEFAULT_CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)} (default: {','.join(DEFAULT_CONTENDERS)})",
    )
    parser.add_argument("--on", choices=("test", "validation"), default="test", help="labels scored on")
    parser.add_argument("--max-test-queries", type=int, default=0, help="0 = all test queries (default)")
    parser.add_argument(
        "--train-pairs", type=int, default=1500, help="JaQuAD train labels used (default: %(default)s)"
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.2, help="--on validation (default: %(default)s)"
    )
    parser.add_argument(
        "--validation-corpus", type=int, default=2000, help="--on validation: other documents (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=STEPS, help="budget of every contender, steps of 32 (default: %(default)s)"
    )
    parser.add_argument(
        "--max-seq-length", type=int, default=0, help="training tokens per text, 0 = the model's (default: 0)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    started = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="embedpipe-ft-bench-") as tmp:
        for name in ("scifact", "jaquad"):
            if args.only in (None, name):
                results[name] = run_dataset(name, Path(tmp), args)
    summary = {
        "benchmark": "fine_tune",
        "model": "all-MiniLM-L6-v2 (packaged)",
        "device": "cpu",
        "scored_on": args.on,
        "budget": {
            "batch_size": BATCH_SIZE,
            "steps": args.steps,
            "pairs_seen": BATCH_SIZE * args.steps,
            "max_seq_length": args.max_seq_length or "model's",
        },
        "auto_settings": AUTO_SETTINGS,
        "rounds": args.rounds,
        "order": [name for _, name in alternation(args.contenders, args.rounds)],
        **results,
        "goal": goal(results) if "plain" in args.contenders and "embedpipe" in args.contenders else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json_line(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
