"""The `embed_stream` component's body: the streaming job launched from a pipeline task.

On `DataflowRunner` the job is submitted with the same worker options as `embed_corpus`
(`DataflowSettings.beam_args(streaming=True)`), written as `gcp_resources` the moment it exists, and
waited for until it runs; then the task returns (a streaming job does not end). While the task waits, a
SIGTERM (Vertex cancelling the task) asks Dataflow to drain the job (`requestedState:
JOB_STATE_DRAINING`): it stops reading Pub/Sub and finishes writing what it read. After the task has
returned, drain the job from its Dataflow page (linked from the task) or with `gcloud dataflow jobs drain`.

On `DirectRunner` the job runs in the task's process on Beam's local runner, fed by a file of change
messages (`embedpipe.embed.streaming.sources`) to its end, and its counts become the task's metrics.

The database is reached through `embedpipe.vectorstore.ConnectionSettings` (a Postgres URI, AlloyDB or
Cloud SQL through their connectors), as by `upload_vectors`; a password only from Secret Manager or an
environment variable, never in clear.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path

from embedpipe.embed.dataflow import DataflowJobs, default_project, gcp_resources_json
from embedpipe.embed.settings import DataflowSettings, ModelSettings, from_mapping
from embedpipe.embed.streaming.config import CONNECTION_PARAMETERS, check_runner_source, connection_settings

RUNNERS = ("DirectRunner", "DataflowRunner")


def embed_stream_task(
    *,
    metrics,
    gcp_resources: str,
    messages=None,
    tuned_model=None,
    subscription: str = "",
    topic: str = "",
    dead_letter_topic: str = "",
    table: str = "embeddings",
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    window_seconds: float = 5.0,
    allowed_lateness_seconds: int = 3600,
    write_shards: int = 4,
    runner: str = "DirectRunner",
    beam_runner=None,
    jobs_client=None,
    exit=None,
    poll_seconds: float = 10,
    **options,
):
    """The body of the `embed_stream` component (see its docstring for the arguments).

    Args:
        metrics: KFP Metrics artifact (`.log_metric`).
        gcp_resources: Path of the `gcp_resources` output parameter.
        messages, tuned_model: KFP artifacts (`.path`), or None.
        runner: "DirectRunner" (a file of `messages`) or "DataflowRunner" (Pub/Sub).
        beam_runner: A PipelineRunner instance to use instead of `runner` (tests pass a fake Dataflow).
        jobs_client: The Dataflow API's jobs client (tests pass a fake); see `DataflowJobs`.
        exit: What SIGTERM ends the task with after requesting the drain (tests); default `os._exit(1)`.
        poll_seconds: Between looks at the job's state while waiting for it to run.
        **options: `ModelSettings`, `DataflowSettings` fields and the connection parameters
            (`CONNECTION_PARAMETERS`).

    Returns:
        The `StreamResult`.
    """
    from embedpipe.embed.runtime import drain_on_sigterm
    from embedpipe.embed.streaming.config import prepare_stream_config
    from embedpipe.embed.streaming.run import run_stream
    from embedpipe.reports import log_metrics

    known = {f.name for settings in (ModelSettings, DataflowSettings) for f in fields(settings)}
    unknown = sorted(set(options) - known - set(CONNECTION_PARAMETERS))
    if unknown:
        raise TypeError(f"embed_stream_task got unknown arguments: {', '.join(unknown)}")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    remote = runner == "DataflowRunner"
    check_runner_source(remote, messages is not None, pubsub_only_remotely=True)
    connection = connection_settings(options, remote=remote)
    model = from_mapping(ModelSettings, options)
    if tuned_model is not None:
        model = replace(
            model, model=tuned_model.uri if remote and tuned_model.uri.startswith("gs://") else tuned_model.path
        )
    dataflow = from_mapping(DataflowSettings, options)
    if remote:
        model = dataflow.model_on_workers(model)
    config = prepare_stream_config(
        subscription,
        topic,
        messages=messages.path if messages is not None else "",
        connection=connection,
        table=table,
        model=model,
        task_type=task_type,
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        window_seconds=window_seconds,
        allowed_lateness_seconds=allowed_lateness_seconds,
        write_shards=write_shards,
        dead_letter_topic=dead_letter_topic,
    )
    Path(gcp_resources).parent.mkdir(parents=True, exist_ok=True)
    if not remote:
        result = run_stream(config)
        Path(gcp_resources).write_text(json.dumps({"resources": []}))  # nothing in the cloud to link or drain
        log_metrics(metrics, dict(result.metrics))
        print(result.summary())
        return result

    dataflow = replace(
        dataflow,
        project=dataflow.project or default_project(),
        temp_location=dataflow.temp_location or metrics.uri.rstrip("/") + "-dataflow-tmp",
    )
    beam_args = dataflow.beam_args(kind="embed-stream", streaming=True)
    jobs = DataflowJobs(dataflow.project, dataflow.location, client=jobs_client)
    submitted: list[str] = []

    def drain() -> None:
        for job_id in submitted:
            jobs.drain(job_id)
            logging.warning("drain of Dataflow job %s requested", job_id)

    with drain_on_sigterm(drain, exit=exit):
        result = run_stream(config, beam_args, runner=beam_runner, wait=False)
        submitted.append(result.job_id)
        Path(gcp_resources).write_text(gcp_resources_json(dataflow.project, dataflow.location, result.job_id))
        logging.info(
            "Dataflow streaming job: https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s",
            dataflow.location,
            result.job_id,
            dataflow.project,
        )
        result.state = jobs.wait_until_running(result.job_id, poll_seconds=poll_seconds)
    print(result.summary())
    return result


__all__ = ["RUNNERS", "embed_stream_task"]
