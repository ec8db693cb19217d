"""The container tier: our images, built here by `make images-local`, run on a Docker daemon the way
Vertex AI and Dataflow run them. `make test-containers` builds the images and starts a daemon if none
answers; without one these tests skip, saying what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from embedpipe.images import RUNTIMES


@pytest.fixture(scope="session")
def docker_client():
    """A client of a daemon that has every image of this version (the train image: the local CPU stand-in)."""
    from embedpipe.docker_runner import DockerUnavailable, check_docker

    try:
        client = check_docker(RUNTIMES)
    except DockerUnavailable as err:
        pytest.skip(f"container tier: {err}")
    yield client
    client.close()


def host_run(*args: str, timeout: float = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m …` of this environment's embedpipe; fails with both streams when it exits non-zero."""
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}\n--- stdout\n{done.stdout[-5000:]}\n--- stderr\n{done.stderr[-5000:]}"
    )
    return done
