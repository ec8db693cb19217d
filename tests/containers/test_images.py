"""What Vertex AI and Dataflow run, run here: the whole pipeline with every task in its image
(kfp.local's DockerRunner), the serving image started with Vertex's AIP_* variables, and the embedding
job's workers inside the Dataflow image (Beam's worker pool, --environment_type=EXTERNAL)."""

import os
import socket
import time

import pandas as pd
import psycopg
import pytest

from embedpipe.images import image_uri
from tests.containers.conftest import host_run
from tests.http_client import assert_gecko_shaped, call, free_port, vertex_predict_request, wait_until_healthy

pytestmark = [pytest.mark.containers, pytest.mark.slow]


def test_the_whole_pipeline_runs_with_every_task_in_its_image(docker_client, tmp_path, tiny_example_data, pg_uri):
    done = host_run(
        "-m",
        "embedpipe.cli",
        "run",
        "--runner",
        "docker",
        "--data",
        str(tiny_example_data),
        "--train-steps",
        "2",
        "--batch-size",
        "2",
        "--margin",
        "-1",
        "--output-dir",
        str(tmp_path / "runs"),
        "--database-uri",
        pg_uri,
        "--table",
        "container_tier",
    )
    out = done.stdout + done.stderr
    assert "runner: DockerRunner" in out  # the quiet console names the runner on a line of its own
    # kfp.local names the image of every task it starts (in the run's full log, not on the quiet console):
    # the light tasks in base, fine_tune in train.
    (log,) = (tmp_path / "runs").glob("*/embedpipe-run.log")
    full = log.read_text()
    assert f"Found image '{image_uri('base')}'" in full and f"Found image '{image_uri('train')}'" in full
    assert "NDCG@10 on the test labels: base" in out, out[-3000:]
    documents = len((tiny_example_data / "corpus.jsonl").read_text().splitlines())
    with psycopg.connect(pg_uri) as connection:
        assert connection.execute("SELECT count(*) FROM container_tier").fetchone()[0] == documents


def test_the_serving_image_answers_vertex_as_gecko_does(docker_client):
    port = free_port()
    health, predict = "/v1/endpoints/1/deployedModels/2", "/v1/endpoints/1/deployedModels/2:predict"
    container = docker_client.containers.run(
        image_uri("serve"),
        detach=True,
        network_mode="host",
        environment={
            "AIP_HTTP_PORT": str(port),
            "AIP_HEALTH_ROUTE": health,
            "AIP_PREDICT_ROUTE": predict,
            "HF_HUB_OFFLINE": "1",
        },
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}{health}", alive=lambda: _running(container))
        request = vertex_predict_request()
        status, answer = call(f"http://127.0.0.1:{port}{predict}", request)
        assert status == 200, answer
        assert_gecko_shaped(answer, instances=len(request["instances"]), dimensions=384)
        assert container.exec_run("id -u").output.decode().strip() != "0", "the serving container runs as root"
    finally:
        container.remove(force=True)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _running(container) -> bool:
    container.reload()
    return container.status in ("created", "running")


def test_the_embedding_jobs_workers_run_in_the_dataflow_image(docker_client, tmp_path, tiny_example_data, pg_uri):
    port = free_port()
    shared = str(tmp_path)
    socket_folder = pg_uri.split("host=", 1)[1]
    worker_pool = docker_client.containers.run(
        image_uri("dataflow"),
        ["python", "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        detach=True,
        network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}",
        environment={"HF_HUB_OFFLINE": "1", "HOME": "/tmp"},
        volumes={
            shared: {"bind": shared, "mode": "rw"},
            str(tiny_example_data): {"bind": str(tiny_example_data), "mode": "ro"},
            socket_folder: {"bind": socket_folder, "mode": "rw"},
        },
    )
    try:
        deadline = time.monotonic() + 60
        while not _accepts(port):
            assert _running(worker_pool) and time.monotonic() < deadline, worker_pool.logs().decode()[-2000:]
            time.sleep(0.5)
        output = tmp_path / "vectors"
        host_run(
            "-m",
            "embedpipe.embed.job",
            "--input",
            str(tiny_example_data / "corpus.jsonl"),
            "--output",
            str(output),
            "--database-uri",
            pg_uri,
            "--table",
            "dataflow_image",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{port}",
        )
        logs = worker_pool.logs().decode()
    finally:
        worker_pool.remove(force=True)
    documents = len((tiny_example_data / "corpus.jsonl").read_text().splitlines())
    vectors = pd.read_parquet(output)
    assert len(vectors) == documents and len(vectors["embedding"].iloc[0]) == 384
    with psycopg.connect(pg_uri) as connection:
        assert connection.execute("SELECT count(*) FROM dataflow_image").fetchone()[0] == documents
    # The pool started SDK workers inside the container: the bundles (model, DoFns, writes) ran there.
    assert "sdk_worker_main" in logs or "Starting worker" in logs, logs[-3000:]
