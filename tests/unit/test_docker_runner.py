"""What `embedpipe run --runner docker` gives each task's container, and what it says when Docker is missing."""

import os

import pytest

from embedpipe import cli
from embedpipe.cli import exits
from embedpipe.docker_runner import DockerUnavailable, check_docker, database_socket_folder, plan_containers


def test_socket_folder_of_libpq_uris():
    assert database_socket_folder("postgresql://postgres:@/postgres?host=/work/.embedpipe/pg") == "/work/.embedpipe/pg"
    assert database_socket_folder("postgresql://postgres@%2Fvar%2Frun%2Fpg/db") == "/var/run/pg"
    assert database_socket_folder("postgresql://user@db.example.com:5432/db") is None
    assert database_socket_folder("") is None


def test_plan_mounts_input_folders_read_only_and_the_socket_folder_read_write(tmp_path, tiny_example_data):
    pg = tmp_path / "pg"
    pg.mkdir()
    arguments = {
        "corpus_path": str(tiny_example_data / "corpus.jsonl"),
        "train_label_path": str(tiny_example_data / "qrels" / "train.tsv"),
        "base_model_version_id": "default",  # not a path: nothing to mount
        "index_corpus_path": "gs://bucket/corpus.jsonl",
        "train_steps": 30,
    }
    plan = plan_containers(arguments, database_uri=f"postgresql://postgres:@/postgres?host={pg}")
    # The qrels folder lies inside the data folder: one mount covers both.
    assert plan.mounts == {str(tiny_example_data): True, str(pg): False}
    assert plan.user == f"{os.getuid()}:{os.getgid()}"
    assert plan.environment["HF_HUB_OFFLINE"] == "1" and plan.environment["HOME"] == "/tmp"


def test_no_daemon_is_a_clear_error_naming_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(DockerUnavailable, match="no Docker daemon answers at unix://.*no-such.sock.*with-docker"):
        check_docker()


def test_run_with_the_docker_runner_stops_before_any_work_without_a_daemon(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    monkeypatch.setenv("EMBEDPIPE_PGDATA", str(tmp_path / "pg"))
    status = cli.main(["run", "--runner", "docker", "--output-dir", str(tmp_path / "runs")])
    assert status == exits.MISSING
    assert "no Docker daemon answers" in capsys.readouterr().err
    assert not (tmp_path / "pg").exists() and not (tmp_path / "runs").exists(), "nothing may start before the check"
