"""Launching the embedding job from a pipeline task: Dataflow worker options, `gcp_resources`, metrics.

`embed_corpus_task` is what the `embed_corpus` component calls. On `DirectRunner` it runs the job in the
task's own process (kfp.local, or a small corpus on Vertex). On `DataflowRunner` it submits the job with
our worker image, writes the job as `gcp_resources` the moment it exists (the Vertex UI links to it, and
cancelling the pipeline cancels the job), waits for it and fails the task if the job fails.

Example:
    >>> dataflow_args(project="p", region="us-central1", temp_location="gs://b/tmp",
    ...               accelerator_type="nvidia-l4", machine_type="g2-standard-8")[:3]
    ['--runner=DataflowRunner', '--project=p', '--region=us-central1']
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

DATAFLOW_JOB_URI = "https://dataflow.googleapis.com/v1b3/projects/{project}/locations/{location}/jobs/{job_id}"
RUNNERS = ("DirectRunner", "DataflowRunner")


def dataflow_args(
    *,
    project: str,
    region: str,
    temp_location: str,
    sdk_container_image: str = "",
    job_name: str = "",
    service_account: str = "",
    network: str = "",
    subnetwork: str = "",
    machine_type: str = "",
    max_workers: int = 0,
    accelerator_type: str = "",
    accelerator_count: int = 1,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Beam pipeline options for a Dataflow run of the embedding job on our worker image.

    Args:
        project: Google Cloud project of the job.
        region: Dataflow region, e.g. "us-central1".
        temp_location: gs:// folder for Dataflow's temporary and staging files.
        sdk_container_image: Worker image (default: `embedpipe.images.DATAFLOW_IMAGE`, which has embedpipe,
            the pinned Beam and torch installed, so nothing is pip-installed on workers).
        job_name: Dataflow job name (default: `embed-corpus-<UTC time>`).
        service_account: Worker service account e-mail ("" = the project's default compute account).
        network: VPC network name; subnetwork: a subnetwork URL (regions/<r>/subnetworks/<s>).
        machine_type: Worker machine type (GPU workers need e.g. "g2-standard-8" for L4, "n1-..." for T4).
        max_workers: Upper bound for autoscaling (0 = Dataflow's default).
        accelerator_type: GPU per worker, e.g. "nvidia-l4", "nvidia-tesla-t4" ("" = CPU workers).
        accelerator_count: GPUs per worker.
        labels: Dataflow job labels.

    Returns:
        Flags for `apache_beam.options.pipeline_options.PipelineOptions`.
    """
    from embedpipe.images import DATAFLOW_IMAGE

    if not project:
        raise ValueError("DataflowRunner needs a project (the pipeline's project is used when empty on Vertex)")
    if not temp_location.startswith("gs://"):
        raise ValueError(f"DataflowRunner needs a gs:// temp_location, got {temp_location!r}")
    job_name = job_name or "embed-corpus-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args = [
        "--runner=DataflowRunner",
        f"--project={project}",
        f"--region={region}",
        f"--temp_location={temp_location}",
        f"--job_name={_job_name(job_name)}",
        f"--sdk_container_image={sdk_container_image or DATAFLOW_IMAGE}",
        "--sdk_location=container",  # Beam is in the image; nothing is staged or installed at start
        "--experiments=use_runner_v2",
    ]
    if service_account:
        args.append(f"--service_account_email={service_account}")
    if network:
        args.append(f"--network={network}")
    if subnetwork:
        args.append(f"--subnetwork={subnetwork}")
    if machine_type:
        args.append(f"--machine_type={machine_type}")
    if max_workers:
        args.append(f"--max_num_workers={max_workers}")
    if accelerator_type:
        if accelerator_count < 1:
            raise ValueError(f"accelerator_count must be at least 1 with accelerator_type {accelerator_type!r}")
        args.append(
            f"--dataflow_service_options=worker_accelerator=type:{accelerator_type};count:{accelerator_count};install-nvidia-driver"
        )
    for key, value in (labels or {}).items():
        args.append(f"--labels={key}={value}")
    return args


def _job_name(name: str) -> str:
    """Dataflow job names: lower-case letters, digits and '-', starting with a letter."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return cleaned if cleaned[:1].isalpha() else "embed-" + cleaned


def gcp_resources_json(project: str, location: str, job_id: str) -> str:
    """The `gcp_resources` JSON of a Dataflow job, as google-cloud-pipeline-components writes it."""
    uri = DATAFLOW_JOB_URI.format(project=project, location=location, job_id=job_id)
    return json.dumps({"resources": [{"resourceType": "DataflowJob", "resourceUri": uri}]})


def default_project() -> str:
    """The project of the environment (Vertex sets CLOUD_ML_PROJECT_ID), read when the task runs."""
    for name in ("CLOUD_ML_PROJECT_ID", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import google.auth

        return google.auth.default()[1] or ""
    except Exception:  # noqa: BLE001 - no credentials here: the caller says what is missing
        return ""


def _location_of(artifact, remote: bool) -> str:
    """Where workers read/write an artifact: its gs:// URI on Dataflow, its local path otherwise."""
    if artifact is None:
        return ""
    return artifact.uri if remote and artifact.uri.startswith("gs://") else artifact.path


def _with_evaluation_vectors(config, evaluation, corpus, vectors, remote: bool, model: str):
    """The job's config with evaluate's vectors as its previous vectors, when they are reusable."""
    from dataclasses import replace

    from embedpipe.embed.reuse import REUSED_FILE, vectors_from_evaluation

    if config.previous_pattern:
        logging.info("previous_vectors is connected, so evaluation_embeddings is not used: the previous run's vectors win")
        return config
    folder = vectors.path.rstrip("/") + "-from-evaluation"
    if not vectors_from_evaluation(evaluation.path, corpus.path, config, folder, model=model):
        return config
    location = vectors.uri.rstrip("/") + "-from-evaluation" if remote and vectors.uri.startswith("gs://") else folder
    return replace(config, previous_pattern=f"{location}/{REUSED_FILE}")


def embed_corpus_task(
    *,
    corpus,
    vectors,
    metrics,
    gcp_resources: str,
    model: str = "default",
    tuned_model=None,
    previous_vectors=None,
    evaluation_embeddings=None,
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    batch_size: int = 32,
    output_dimensionality: int = 0,
    backend: str = "torch",
    runner: str = "DirectRunner",
    project: str = "",
    location: str = "us-central1",
    temp_location: str = "",
    service_account: str = "",
    network: str = "",
    subnetwork: str = "",
    machine_type: str = "",
    max_workers: int = 0,
    accelerator_type: str = "",
    accelerator_count: int = 1,
    sdk_container_image: str = "",
    beam_runner=None,
):
    """The body of the `embed_corpus` component (see its docstring for the arguments).

    Args:
        corpus, vectors, metrics, tuned_model, previous_vectors: KFP artifacts (anything with `.uri`,
            `.path`; `metrics` with `.log_metric`).
        evaluation_embeddings: An `evaluate` task's `corpus_embeddings`: when `previous_vectors` is not
            given, the vectors evaluation computed with this model are carried over instead of embedded
            again (checked first; see `embedpipe.embed.reuse`).
        gcp_resources: Path of the `gcp_resources` output parameter.
        beam_runner: A PipelineRunner instance to use instead of `runner` (tests pass a fake Dataflow).

    Returns:
        The JobResult.
    """
    from embedpipe.embed.job import prepare_config, run_job
    from embedpipe.reports import log_metrics

    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    remote = runner == "DataflowRunner"
    output = _location_of(vectors, remote)
    model_ref = _location_of(tuned_model, remote) or model
    gpu = bool(accelerator_type) and remote
    config = prepare_config(
        _location_of(corpus, remote),
        output,
        model=model_ref,
        task_type=task_type,
        previous=_location_of(previous_vectors, remote),
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        output_dimensionality=output_dimensionality,
        backend=backend,
        # On GPU workers one model per GPU serves every SDK process of the machine.
        share_across_processes=gpu,
        model_copies=max(accelerator_count, 1) if gpu else 1,
    )
    if evaluation_embeddings is not None:
        local_model = tuned_model.path if tuned_model is not None else model
        config = _with_evaluation_vectors(config, evaluation_embeddings, corpus, vectors, remote, local_model)
    beam_args: list[str] = []
    if remote:
        beam_args = dataflow_args(
            project=project or default_project(),
            region=location,
            temp_location=temp_location or vectors.uri.rstrip("/") + "-dataflow-tmp",
            sdk_container_image=sdk_container_image,
            service_account=service_account,
            network=network,
            subnetwork=subnetwork,
            machine_type=machine_type,
            max_workers=max_workers,
            accelerator_type=accelerator_type,
            accelerator_count=accelerator_count,
        )
    else:
        Path(output).mkdir(parents=True, exist_ok=True)

    def write_resources(project_id: str, region: str, job_id: str) -> None:
        Path(gcp_resources).parent.mkdir(parents=True, exist_ok=True)
        Path(gcp_resources).write_text(gcp_resources_json(project_id, region, job_id))
        logging.info("Dataflow job: https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s", region, job_id, project_id)

    result = run_job(config, beam_args, runner=beam_runner, on_submitted=write_resources if remote else None)
    if not remote:  # nothing in the cloud to link or cancel
        Path(gcp_resources).parent.mkdir(parents=True, exist_ok=True)
        Path(gcp_resources).write_text(json.dumps({"resources": []}))
    vectors.metadata.update({"model": model_ref, "task_type": task_type, "dimension": output_dimensionality or "full",
                             "format": "parquet", "job_id": result.job_id})
    log_metrics(metrics, {k: v for k, v in result.metrics.items()})
    print(result.summary())
    return result
