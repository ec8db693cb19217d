"""Data preparation: validate BEIR-style inputs, split labels by query, write typed Parquet outputs.

Example:
    >>> from embedpipe.prepare import prepare_data
    >>> prepared = prepare_data("examples/scifact-mini/corpus.jsonl",        # doctest: +SKIP
    ...                         "examples/scifact-mini/queries.jsonl",
    ...                         "examples/scifact-mini/qrels/train.tsv",
    ...                         test_labels_path="examples/scifact-mini/qrels/test.tsv")
    >>> prepared.metrics["corpus_documents"]                                  # doctest: +SKIP
    400

Everything is validated before anything is written; problems are reported all at once
(`embedpipe.validation.DataValidationError`). The outputs are written as one set (`PreparedData.write`).

Vertex AI's dataset size requirements for tuning (`embedpipe.vertex.DATASET_LIMITS`: 9 to 10,000 queries,
9 to 500,000 documents, at least 3 query ids per label file and 9 across all splits, fewer than 500,000
labels) are not limits of embedpipe's: by default a dataset outside them is prepared with a warning
that names the file, the field and the requirement (`vertex_limits="error"` makes them errors, to check
that a dataset would also be accepted by Vertex).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from embedpipe import storage
from embedpipe.beir import LABEL_COLUMNS, Label, read_jsonl, read_labels
from embedpipe.validation import Problem, ProblemCollector
from embedpipe.vertex import DATASET_LIMITS, TUNING_DOCS_URL

SPLITS = ("train", "validation", "test")
#: What `prepare_data(vertex_limits=...)` does with a dataset outside Vertex AI's size requirements.
VERTEX_LIMIT_MODES = ("warn", "error")


@dataclass
class PreparedData:
    """Validated, split data, ready to be written.

    Attributes:
        corpus: DataFrame with `_id`, `title`, `text`, `metadata` (JSON text).
        queries: DataFrame with `_id`, `text`, `metadata`.
        labels: One DataFrame per split in SPLITS, columns `query-id`, `corpus-id`, `score`
            (an empty frame where a split has no labels).
        metrics: Counts, flat name -> number, as logged to the KFP Metrics artifact.
        warnings: Things worth a look that are not errors.
        sources: Which file each split came from, or how it was derived.
    """

    corpus: object
    queries: object
    labels: dict[str, object]
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def write(
        self,
        corpus_path: str,
        queries_path: str,
        label_paths: dict[str, str],
        report_path: str | None = None,
    ) -> None:
        """Writes the Parquet files (and the Markdown report) as one set: all of them replace the old set, or none.

        Every file is written beside its target first; only when all are written are they renamed into
        place (`embedpipe.storage.atomic_paths`, which says why this works for local and `/gcs/` paths).
        A failure part-way leaves the previous set as it was; writing the same data again gives the same files.

        Args:
            corpus_path: Where to write the corpus Parquet file.
            queries_path: Where to write the queries Parquet file.
            label_paths: Split name -> where to write that split's labels Parquet file.
            report_path: Where to write the Markdown report, if anywhere.
        """
        outputs = [(corpus_path, self.corpus), (queries_path, self.queries)]
        outputs += [(label_paths[split], self.labels[split]) for split in SPLITS if split in label_paths]
        paths = [path for path, _ in outputs] + ([report_path] if report_path else [])
        with storage.atomic_paths(paths) as staged:
            for (_, frame), tmp in zip(outputs, staged):
                frame.to_parquet(tmp, index=False)
            if report_path:
                staged[-1].write_text(self.report(), encoding="utf-8")

    def report(self) -> str:
        """Returns a short Markdown report: counts, length distributions, warnings."""
        from embedpipe.reports import length_summary

        m = self.metrics
        lines = [
            "# Data preparation report",
            "",
            "| | records | queries with labels |",
            "|---|---:|---:|",
            f"| corpus documents | {m['corpus_documents']:,} | |",
            f"| queries | {m['queries']:,} | |",
        ]
        for split in SPLITS:
            lines.append(
                f"| {split} labels ({self.sources.get(split, 'none')}) | {m[f'{split}_labels']:,} | {m[f'{split}_queries']:,} |"
            )
        lines += [
            "",
            "## Lengths (characters / words)",
            "",
            "| | min | median | p95 | max |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, texts in (
            ("corpus title + text", (self.corpus["title"] + " " + self.corpus["text"]).str.strip()),
            ("queries", self.queries["text"]),
        ):
            c, w = length_summary(texts, "chars"), length_summary(texts, "words")
            cells = " | ".join(f"{c[k]:,} / {w[k]:,}" for k in ("min", "median", "p95", "max"))
            lines.append(f"| {name} | {cells} |")
        lines += ["", "## Warnings", ""]
        lines += [f"- {w}" for w in self.warnings] or ["- none"]
        return "\n".join(lines) + "\n"


def split_queries(query_ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Splits query ids into (kept, split_off) deterministically for a seed.

    The order of `query_ids` does not matter: they are sorted before shuffling.
    """
    ordered = sorted(set(query_ids))
    random.Random(seed).shuffle(ordered)
    n = round(len(ordered) * fraction)
    return ordered[n:], ordered[:n]


def prepare_data(
    corpus_path: str,
    queries_path: str,
    train_labels_path: str,
    test_labels_path: str = "",
    validation_labels_path: str = "",
    *,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    seed: int = 42,
    max_problems: int = 50,
    gcs_client=None,
    vertex_limits: str = "warn",
) -> PreparedData:
    """Reads and validates BEIR-style inputs and splits the labels.

    Args:
        corpus_path: `corpus.jsonl`, local path or `gs://` URI.
        queries_path: `queries.jsonl`, local path or `gs://` URI.
        train_labels_path: Train labels TSV.
        test_labels_path: Test labels TSV; when empty, `test_fraction` of the train queries are split off.
        validation_labels_path: Validation labels TSV; when empty, `validation_fraction` of the train
            queries are split off (0 = no validation split).
        test_fraction: Share of labelled train queries moved to test when no test file is given.
        validation_fraction: Share of labelled train queries moved to validation when no file is given.
        seed: Seed of the split; the same seed gives the same split.
        max_problems: At most this many problems are listed in the error.
        gcs_client: A `google.cloud.storage.Client` (or a fake) for `gs://` paths.
        vertex_limits: "warn" (default): a dataset outside Vertex AI's documented size requirements is
            prepared with a warning per requirement; "error": each is a problem and nothing is written.

    Returns:
        PreparedData, not yet written.

    Raises:
        DataValidationError: listing every problem found (up to `max_problems`), before anything is written.
        FileNotFoundError: when an input file does not exist.
    """
    import pandas as pd

    if vertex_limits not in VERTEX_LIMIT_MODES:
        raise ValueError(f"vertex_limits must be one of {', '.join(VERTEX_LIMIT_MODES)}, got {vertex_limits!r}")
    problems = ProblemCollector(max_problems)
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")

    corpus = read_jsonl(storage.read_bytes(corpus_path, gcs_client), corpus_path, problems, with_title=True)
    queries = read_jsonl(storage.read_bytes(queries_path, gcs_client), queries_path, problems, with_title=False)

    label_files = {"train": train_labels_path, "validation": validation_labels_path, "test": test_labels_path}
    labels: dict[str, list[Label]] = {}
    for split in ("train", "validation", "test"):
        path = label_files[split]
        if path:
            labels[split] = read_labels(
                storage.read_bytes(path, gcs_client),
                path,
                problems,
                query_ids=queries.line_of,
                corpus_ids=corpus.line_of,
                queries_file=queries_path,
                corpus_file=corpus_path,
            )

    # A query may be in one split only: the later file is the one reported.
    owner: dict[str, tuple[str, int]] = {}
    for split in ("train", "validation", "test"):
        for label in labels.get(split, []):
            first = owner.setdefault(label.query_id, (split, label.line))
            if first[0] != split:
                problems.add(
                    label_files[split],
                    label.line,
                    "query-id",
                    f"query {label.query_id!r} is also in the {first[0]} labels ({label_files[first[0]]} line {first[1]}); "
                    "a query may be in one split only",
                )

    sources = {split: Path(path).name for split, path in label_files.items() if path}
    train_queries = list(dict.fromkeys(label.query_id for label in labels.get("train", [])))
    for split, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if split in labels or fraction == 0.0:
            continue
        kept, split_off = split_queries(train_queries, fraction, seed + (0 if split == "test" else 1))
        if not split_off or not kept:
            problems.add(
                train_labels_path,
                None,
                None,
                f"too few queries to split off a {split} set: {len(train_queries)} labelled queries x "
                f"{split}_fraction {fraction} leaves {len(split_off)} {split} and {len(kept)} train queries; "
                f"give {split} labels or change {split}_fraction",
            )
            continue
        moved = set(split_off)
        labels[split] = [label for label in labels["train"] if label.query_id in moved]
        labels["train"] = [label for label in labels["train"] if label.query_id not in moved]
        train_queries = [q for q in train_queries if q not in moved]
        sources[split] = f"{fraction:.0%} of train queries, seed {seed}"

    outside_vertex_limits = vertex_limit_problems(
        len(corpus.rows),
        len(queries.rows),
        labels,
        {"corpus": corpus_path, "queries": queries_path}
        | {split: label_files[split] or f"{split} split ({sources.get(split, 'none')})" for split in SPLITS},
    )
    if vertex_limits == "error":
        for problem in outside_vertex_limits:
            problems.add(problem.file, problem.line, problem.field, problem.message)
    problems.raise_if_any()

    label_frames = {}
    for split in SPLITS:
        rows = [(x.query_id, x.corpus_id, x.score) for x in labels.get(split, [])]
        label_frames[split] = pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).astype(
            {"query-id": "string", "corpus-id": "string", "score": "int64"}
        )
    corpus_frame = pd.DataFrame(corpus.rows, columns=["_id", "title", "text", "metadata"]).astype("string")
    queries_frame = pd.DataFrame(queries.rows, columns=["_id", "text", "metadata"]).astype("string")

    metrics: dict[str, float] = {"corpus_documents": len(corpus_frame), "queries": len(queries_frame)}
    for split in SPLITS:
        frame = label_frames[split]
        metrics[f"{split}_labels"] = len(frame)
        metrics[f"{split}_queries"] = int(frame["query-id"].nunique())

    warnings = _warnings(corpus_frame, queries_frame, label_frames)
    warnings += [f"{problem} (embedpipe goes on: not a limit here)" for problem in outside_vertex_limits]
    metrics["warnings"] = len(warnings)
    return PreparedData(corpus_frame, queries_frame, label_frames, metrics, warnings, sources)


def vertex_limit_problems(
    documents: int, queries: int, labels: dict[str, list[Label]], files: dict[str, str]
) -> list[Problem]:
    """Where a dataset is outside Vertex AI's documented size requirements for tuning text embeddings.

    Args:
        documents: Documents in the corpus.
        queries: Queries in the queries file.
        labels: The labels of each split, after splitting (a split without labels may be missing).
        files: What to name in a problem: "corpus", "queries" and each split -> its file (or description).

    Returns:
        One problem per requirement not met (file, field, what Vertex requires), in the order Vertex lists them.
    """
    limits, found = DATASET_LIMITS, []
    where = f"Vertex AI's tuning requires {{}} ({TUNING_DOCS_URL})"
    if not limits.min_queries <= queries <= limits.max_queries:
        requirement = f"{limits.min_queries:,} to {limits.max_queries:,} queries"
        found.append(Problem(files["queries"], None, "_id", f"{queries:,} queries; " + where.format(requirement)))
    if not limits.min_documents <= documents <= limits.max_documents:
        requirement = f"{limits.min_documents:,} to {limits.max_documents:,} corpus documents"
        found.append(Problem(files["corpus"], None, "_id", f"{documents:,} documents; " + where.format(requirement)))
    labelled: set[str] = set()
    for split in SPLITS:
        split_queries = {label.query_id for label in labels.get(split, [])}
        labelled |= split_queries
        if split_queries and len(split_queries) < limits.min_queries_per_label_file:
            requirement = f"at least {limits.min_queries_per_label_file} query ids in each label file"
            message = f"{len(split_queries)} query ids in the {split} labels; " + where.format(requirement)
            found.append(Problem(files[split], None, "query-id", message))
    if len(labelled) < limits.min_labelled_queries:
        requirement = f"at least {limits.min_labelled_queries} query ids across all label files"
        message = f"{len(labelled)} query ids across the train, validation and test labels; " + where.format(
            requirement
        )
        found.append(Problem(files["train"], None, "query-id", message))
    total = sum(len(split_labels) for split_labels in labels.values())
    if total > limits.max_labels:
        requirement = f"fewer than {limits.max_labels + 1:,} labels in all"
        found.append(
            Problem(files["train"], None, None, f"{total:,} labels in all splits; " + where.format(requirement))
        )
    return found


def _warnings(corpus, queries, labels) -> list[str]:
    warnings = []
    labelled = set()
    for split, frame in labels.items():
        labelled.update(frame["query-id"])
        zero = int((frame["score"] == 0).sum())
        if zero:
            warnings.append(
                f"{split}: {zero:,} labels have score 0 (not relevant); they are kept but never used as positives"
            )
        positives = frame[frame["score"] > 0].groupby("query-id").size()
        no_positive = frame["query-id"].nunique() - len(positives)
        if no_positive:
            warnings.append(
                f"{split}: {no_positive:,} queries have no relevant (score > 0) document; evaluation skips them"
            )
    unlabelled = len(queries) - len(labelled & set(queries["_id"]))
    if unlabelled:
        warnings.append(f"{unlabelled:,} of {len(queries):,} queries have no label in any split (kept, not used)")
    untitled = int((corpus["title"].str.strip() == "").sum())
    if untitled:
        warnings.append(f"{untitled:,} corpus documents have no title")
    long_docs = int(((corpus["title"] + " " + corpus["text"]).str.split().str.len() > 256).sum())
    if long_docs:
        warnings.append(
            f"{long_docs:,} corpus documents are longer than 256 words; models with a short max_seq_length truncate them"
        )
    if labels["validation"].empty:
        warnings.append("no validation split (give validation labels or validation_fraction > 0 to have one)")
    return warnings
