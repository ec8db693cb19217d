"""The wheel holds every package, and what it installs works outside the repository: the CLI's defaults,
a whole local pipeline ending in rows in PostgreSQL, `embedpipe search` and `embedpipe serve`."""

import json
import zipfile
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, make_tiny_example_data
from tests.installed.conftest import assert_serves_predictions

pytestmark = pytest.mark.slow

#: Source roots and the package each installs as (setup.py).
ROOTS = {
    "src/embedpipe": "embedpipe",
    "components": "embedpipe.components",
    "pipelines": "embedpipe.pipelines",
    "examples": "embedpipe.examples",
}


def packages_in_the_tree() -> set[str]:
    found = set()
    for folder, package in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *relative)))
    return found


def test_the_wheel_holds_every_package_of_the_tree(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages_in_the_tree() - in_wheel == set(), "packages missing from the wheel"
    # Every module of the tree, not only the packages, and the example data the CLI defaults to.
    for folder, package in ROOTS.items():
        for module in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in module.parts:
                inside = package.replace(".", "/") + "/" + str(module.relative_to(REPO / folder))
                assert inside in names, f"{module.relative_to(REPO)} is not in the wheel"
    assert "embedpipe/examples/scifact-mini/qrels/test.tsv" in names and "embedpipe/py.typed" in names
    # The reports' templates (package data, not modules).
    templates = REPO / "src" / "embedpipe" / "reports" / "templates"
    assert {f"embedpipe/reports/templates/{t.name}" for t in templates.glob("*.j2")} <= set(names)


def test_embedpipe_is_imported_from_the_installed_wheel(installed):
    done = installed.run(
        installed.bin("python"),
        "-c",
        "import embedpipe, embedpipe.vectorstore, embedpipe.components, embedpipe.pipelines, embedpipe.examples;"
        "print(embedpipe.__file__)",
    )
    location = Path(done.stdout.strip())
    assert location.is_relative_to(installed.venv) and not location.is_relative_to(REPO), location


def test_prepare_defaults_to_the_packaged_example_data(installed):
    done = installed.run(installed.bin("embedpipe"), "prepare", "--output-dir", "prepared")
    assert "corpus_documents" in done.stdout or "400" in done.stdout
    assert (installed.workdir / "prepared" / "corpus.parquet").exists()


def test_a_whole_local_run_then_search_then_serve(installed):
    data = make_tiny_example_data(installed.workdir / "tiny")
    run = installed.run(
        installed.bin("embedpipe"),
        "run",
        "--data",
        str(data),
        "--train-steps",
        "2",
        "--batch-size",
        "2",
        "--margin",
        "-1",
        "--output-dir",
        "runs",
        "--table",
        "installed_tier",
    )
    assert "NDCG@10 on the test labels: base" in run.stdout, run.stdout[-3000:]
    # The evaluation report, rendered from the wheel's templates, under a name that opens in a browser.
    report = next(line.split(": ", 1)[1] for line in run.stdout.splitlines() if line.startswith("Evaluation report: "))
    page = (installed.workdir / report).read_text(encoding="utf-8")  # printed relative to where the run ran
    assert report.endswith(".html") and page.startswith("<!DOCTYPE html>") and 'id="gained"' in page and "<svg" in page
    assert any(
        line.startswith("Vectors:") and line.endswith("of the embedded PostgreSQL") for line in run.stdout.splitlines()
    ), run.stdout[-3000:]
    # The run used the embedded database (EMBEDPIPE_PGDATA of this venv); `embedpipe db` says how to reach it.
    announced = installed.run(installed.bin("embedpipe"), "db").stdout
    uri = next(line.split(": ", 1)[1] for line in announced.splitlines() if line.startswith("embedded PostgreSQL"))
    documents = len((data / "corpus.jsonl").read_text().splitlines())
    with psycopg.connect(uri) as connection:
        assert connection.execute("SELECT count(*) FROM installed_tier").fetchone()[0] == documents

    search = installed.run(
        installed.bin("embedpipe"),
        "search",
        "vitamin B12 and homocysteine",
        "--db",
        uri,
        "--table",
        "installed_tier",
        "-k",
        "3",
        "--json",
    )
    hits = json.loads(search.stdout)
    assert len(hits) == 3

    assert_serves_predictions(installed, installed.bin("embedpipe"), "serve", "--host", "127.0.0.1")
