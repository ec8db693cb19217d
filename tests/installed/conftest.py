"""The installed tier: embedpipe as Vertex and Dataflow get it — the wheel, installed into a fresh virtual
environment, run from a folder outside the repository (so neither `src/` nor `components/` can be imported
by accident)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO


@dataclass
class Installed:
    """A fresh venv with the wheel installed, and a work folder outside the repository."""

    venv: Path
    workdir: Path
    env: dict

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        return done


def installed_environment(root: Path, venv: Path) -> dict:
    """What a command of the venv runs with: the venv's bin first, no PYTHONPATH, offline, its own PGDATA under root."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        EMBEDPIPE_PGDATA=str(root / "pg"),
    )
    return env


def assert_serves_predictions(installed: Installed, *serve: str) -> None:
    """Starts `serve` (the command line of `embedpipe serve`, without --port) in the venv and checks that it
    answers a Vertex AI text-embedding :predict request as textembedding-gecko does."""
    from tests.http_client import assert_gecko_shaped, call, free_port, vertex_predict_request, wait_until_healthy

    port = free_port()
    server = subprocess.Popen(
        [*serve, "--port", str(port)],
        cwd=installed.workdir,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/health", alive=lambda: server.poll() is None)
        status, answer = call(f"http://127.0.0.1:{port}/predict", vertex_predict_request())
        assert status == 200, answer
        assert_gecko_shaped(answer, instances=len(vertex_predict_request()["instances"]), dimensions=384)
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, built the way `make images` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("embedpipe-*.whl")
    return built


@pytest.fixture(scope="session")
def installed(tmp_path_factory, wheel) -> Installed:
    """The wheel with every extra (`[all]`) and its pinned dependencies (constraints.txt, CPU torch) in a new venv; a
    few minutes, once per session. The venvs of one extra each are in test_extras.py."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "-c",
            str(REPO / "constraints.txt"),
            "torch==2.13.0",
            f"embedpipe[all] @ {wheel.as_uri()}",  # every extra: this venv runs every command
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"installing the wheel failed:\n{done.stderr[-4000:]}"
    workdir = root / "work"
    workdir.mkdir()
    env = installed_environment(root, venv)
    yield Installed(venv, workdir, env)
    subprocess.run(
        [str(venv / "bin" / "embedpipe"), "db", "--stop"], cwd=workdir, env=env, capture_output=True, timeout=120
    )
