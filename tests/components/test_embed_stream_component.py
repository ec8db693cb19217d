"""Component tier: embed_stream's Python function, on Beam's local runner (a file of messages into the
embedded Postgres) and on a faked Dataflow (`FakeDataflowRunner` of the embed_corpus tests, and a fake
Dataflow API client for the job's state and the drain): Dataflow and Pub/Sub cannot be reached from here."""

import json
import os
import signal
from pathlib import Path

import psycopg
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions
from google.protobuf import json_format
from kfp import dsl

from embedpipe.components import EmbedStreamOp, embed_stream
from embedpipe.images import DATAFLOW_IMAGE
from embedpipe.vectorstore.connections import ConnectionConfigError
from tests.components.test_embed_corpus_component import FakeDataflowRunner, artifact

pytestmark = pytest.mark.slow

SUBSCRIPTION = "projects/my-project/subscriptions/docs"
JOB_ID = "2026-11-23_01_02_03-42"  # FakeDataflowRunner's


def write_messages(path: Path) -> Path:
    lines = [
        json.dumps({"id": "a", "title": "Alpha", "text": "The first version of alpha."}),
        json.dumps({"id": "b", "text": "Bravo, about radio call signs.", "metadata": {"lang": "en"}}),
        "{not json",
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"id": "a", "title": "Alpha", "text": "The second version of alpha."}),  # later line: newer
        json.dumps({"id": "c", "text": "Charlie, soon gone."}),
        "",
        json.dumps({"id": "c", "delete": True}),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def contents(pg_uri, table) -> dict:
    with psycopg.connect(pg_uri) as conn:
        return dict(conn.execute(f'SELECT id, content FROM "{table}"').fetchall())


def test_locally_a_file_of_messages_is_played_into_the_table_and_counted(tmp_path, pg_uri):
    metrics = artifact(dsl.Metrics, tmp_path / "metrics")
    embed_stream.python_func(
        metrics=metrics,
        gcp_resources=str(tmp_path / "gcp_resources"),
        messages=artifact(dsl.Dataset, write_messages(tmp_path / "messages.jsonl")),
        database_uri=pg_uri,
        table="stream_component",
        write_shards=2,
    )
    assert contents(pg_uri, "stream_component") == {
        "a": "The second version of alpha.",
        "b": "Bravo, about radio call signs.",
    }
    m = metrics.metadata
    assert (m["messages_read"], m["dead_letters"], m["messages_superseded"]) == (7, 2, 2)
    assert (m["documents_upserted"], m["documents_deleted"], m["messages_stale"]) == (2, 1, 0)
    assert json.loads((tmp_path / "gcp_resources").read_text()) == {"resources": []}


class FakeJobs:
    """The Dataflow API's jobs client: answers `get_job` with the given states, records `update_job`."""

    def __init__(self, states, on_get=None):
        self.states, self.on_get, self.gets, self.updates = list(states), on_get, [], []

    def get_job(self, request):
        self.gets.append(request)
        if self.on_get:
            self.on_get(len(self.gets))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        from google.cloud import dataflow_v1beta3

        return dataflow_v1beta3.Job(current_state=state)

    def update_job(self, request):
        self.updates.append(request)


def dataflow_arguments(tmp_path, pg_uri, **extra):
    return dict(
        metrics=artifact(dsl.Metrics, "gs://bucket/run/embed-stream/metrics"),
        gcp_resources=str(tmp_path / "gcp_resources"),
        subscription=SUBSCRIPTION,
        database_uri=pg_uri,
        table="stream_dataflow",
        runner="DataflowRunner",
        project="my-project",
        location="europe-west4",
        machine_type="n1-standard-8",
        max_workers=4,
        network="vpc",
        accelerator_type="nvidia-l4",
        dataflow_image=DATAFLOW_IMAGE,
        poll_seconds=0,
        **extra,
    )


def test_on_dataflow_it_launches_with_embed_corpus_worker_options_links_the_job_and_returns_when_running(
    tmp_path, pg_uri
):
    from embedpipe.embed.streaming.task import embed_stream_task

    linked_at_first_look = []
    jobs = FakeJobs(
        ["JOB_STATE_PENDING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING"],
        on_get=lambda n: linked_at_first_look.append((tmp_path / "gcp_resources").exists()) if n == 1 else None,
    )
    fake = FakeDataflowRunner()
    result = embed_stream_task(**dataflow_arguments(tmp_path, pg_uri), beam_runner=fake, jobs_client=jobs)

    assert result.state == "JOB_STATE_RUNNING" and result.job_id == JOB_ID and len(jobs.gets) == 3
    assert linked_at_first_look == [True]  # gcp_resources written as soon as the job exists
    assert jobs.updates == []  # nothing drained: the job runs on after the task
    options = fake.options
    assert options.view_as(StandardOptions).runner == "DataflowRunner" and options.view_as(StandardOptions).streaming
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == (
        "my-project",
        "europe-west4",
        "gs://bucket/run/embed-stream/metrics-dataflow-tmp",
    )
    assert cloud.job_name.startswith("embed-stream-")
    assert cloud.dataflow_service_options == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.max_num_workers, workers.network) == ("n1-standard-8", 4, "vpc")
    assert workers.sdk_container_image == DATAFLOW_IMAGE
    assert "ReadMessages" in fake.labels and "WriteChanges" in fake.labels

    from google_cloud_pipeline_components.proto import gcp_resources_pb2

    resources = json_format.Parse((tmp_path / "gcp_resources").read_text(), gcp_resources_pb2.GcpResources())
    assert resources.resources[0].resource_type == "DataflowJob"
    assert resources.resources[0].resource_uri.endswith(f"/projects/my-project/locations/europe-west4/jobs/{JOB_ID}")


class Exited(Exception):
    pass


def test_sigterm_while_launching_drains_the_dataflow_job(tmp_path, pg_uri):
    from embedpipe.embed.streaming.task import embed_stream_task

    def cancel_task(n):  # Vertex cancels the task while the job is still starting
        if n == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    def exit():
        raise Exited

    before = signal.getsignal(signal.SIGTERM)
    jobs = FakeJobs(["JOB_STATE_PENDING"], on_get=cancel_task)
    with pytest.raises(Exited):
        embed_stream_task(
            **dataflow_arguments(tmp_path, pg_uri), beam_runner=FakeDataflowRunner(), jobs_client=jobs, exit=exit
        )
    assert jobs.updates == [
        {
            "project_id": "my-project",
            "location": "europe-west4",
            "job_id": JOB_ID,
            "job": {"requested_state": "JOB_STATE_DRAINING"},
        }
    ]
    assert signal.getsignal(signal.SIGTERM) == before  # the task's own handler is back


def test_a_job_that_ends_before_it_runs_fails_the_task(tmp_path, pg_uri):
    from embedpipe.embed.streaming.task import embed_stream_task

    with pytest.raises(RuntimeError, match=f"Dataflow job {JOB_ID} ended in state JOB_STATE_FAILED before it ran"):
        embed_stream_task(
            **dataflow_arguments(tmp_path, pg_uri),
            beam_runner=FakeDataflowRunner(),
            jobs_client=FakeJobs(["JOB_STATE_FAILED"]),
        )


@pytest.mark.parametrize(
    "arguments, error",
    [
        (
            dict(runner="DataflowRunner", database_uri="postgresql://h/db", password_env="DB_PASSWORD"),
            "would be read on the Dataflow workers",
        ),
        (dict(runner="DataflowRunner"), "the embedded local database: Dataflow workers cannot reach it"),
        (dict(runner="DataflowRunner", messages="file"), "messages \\(a file\\) is read on the local runner only"),
        (dict(), "runner DirectRunner reads a file of messages"),
        (dict(database_uri="postgresql://u:hunter2@db/x", messages="file"), "carries a password in clear"),
        (dict(target="cloudsql", instance="i", messages="file"), "must look like project:region:instance"),
        (dict(runner="Flink"), "runner must be one of"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(tmp_path, arguments, error):
    from embedpipe.embed.streaming.task import embed_stream_task

    if arguments.get("messages") == "file":
        arguments["messages"] = artifact(dsl.Dataset, write_messages(tmp_path / "m.jsonl"))
    runner = FakeDataflowRunner()
    with pytest.raises((ValueError, ConnectionConfigError), match=error) as err:
        embed_stream_task(
            metrics=artifact(dsl.Metrics, tmp_path / "metrics"),
            gcp_resources=str(tmp_path / "gcp_resources"),
            beam_runner=runner,
            **{"subscription": SUBSCRIPTION, "project": "p", **arguments},
        )
    assert "hunter2" not in str(err.value) and runner.options is None and not (tmp_path / "gcp_resources").exists()


def test_the_component_is_exported_with_its_op_alias():
    assert EmbedStreamOp is embed_stream
    inputs = embed_stream.component_spec.inputs
    assert inputs["runner"].default == "DirectRunner" and inputs["target"].default == "postgres"
    assert set(embed_stream.component_spec.outputs) == {"metrics", "gcp_resources"}


def test_a_job_that_does_not_start_in_time_is_left_running_and_the_task_says_so():
    from embedpipe.embed.dataflow import DataflowJobs

    jobs = FakeJobs(["JOB_STATE_PENDING"])
    slept = []
    with pytest.raises(RuntimeError, match="is still JOB_STATE_PENDING after 30 s; it was left as it is"):
        DataflowJobs("p", "r", client=jobs).wait_until_running(
            "job-1", timeout_seconds=30, poll_seconds=10, sleep=slept.append
        )
    assert slept == [10, 10, 10] and jobs.updates == []
    assert jobs.gets[0] == {"project_id": "p", "location": "r", "job_id": "job-1"}
