"""The `embed_corpus` component's body: the embedding job run from a pipeline task, locally or on Dataflow.

On `DirectRunner` the job runs in the task's own process (kfp.local, or a small corpus on Vertex). On
`DataflowRunner` it is submitted with our worker image; the job is written as `gcp_resources` the moment
it exists (the Vertex UI links to it, and cancelling the pipeline cancels the job), then waited for, and
the task fails if the job fails. The job's counts become the task's metrics.

The component passes its arguments as they are (`embed_corpus_task(**arguments)`); the model and Dataflow
options among them become `ModelSettings` and `DataflowSettings` here, by their field names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace
from pathlib import Path

from embedpipe.embed.dataflow import default_project, gcp_resources_json
from embedpipe.embed.settings import DataflowSettings, DeadLetterLimits, ModelSettings, from_mapping

RUNNERS = ("DirectRunner", "DataflowRunner")


def _location_of(artifact, remote: bool) -> str:
    """Where workers read/write an artifact: its gs:// URI on Dataflow, its local path otherwise."""
    if artifact is None:
        return ""
    return artifact.uri if remote and artifact.uri.startswith("gs://") else artifact.path


def _with_evaluation_vectors(config, evaluation, corpus, vectors, remote: bool, model: str):
    """The job's config with evaluate's vectors as its previous vectors, when they are reusable."""
    from embedpipe.embed.reuse import REUSED_FILE, vectors_from_evaluation

    if config.previous_pattern:
        logging.info(
            "previous_vectors is connected, so evaluation_embeddings is not used: the previous run's vectors win"
        )
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
    tuned_model=None,
    previous_vectors=None,
    evaluation_embeddings=None,
    task_type: str = "RETRIEVAL_DOCUMENT",
    chunk_tokens: int = 0,
    chunk_overlap: int = 0,
    runner: str = "DirectRunner",
    beam_runner=None,
    **options,
):
    """The body of the `embed_corpus` component (see its docstring for the arguments).

    Args:
        corpus, vectors, metrics, tuned_model, previous_vectors: KFP artifacts (anything with `.uri`,
            `.path`; `metrics` with `.log_metric`).
        evaluation_embeddings: An `evaluate` task's `corpus_embeddings`: when `previous_vectors` is not
            given, the vectors evaluation computed with this model are carried over instead of embedded
            again (checked first; see `embedpipe.embed.reuse`).
        gcp_resources: Path of the `gcp_resources` output parameter.
        runner: "DirectRunner" or "DataflowRunner".
        beam_runner: A PipelineRunner instance to use instead of `runner` (tests pass a fake Dataflow).
        **options: `ModelSettings`, `DataflowSettings` and `DeadLetterLimits` fields (`model`, `batch_size`,
            `backend`, `project`, `location`, `machine_type`, `max_dead_letter_share`, ...).

    Returns:
        The JobResult.
    """
    from embedpipe.embed.job import prepare_config, run_job
    from embedpipe.reports import log_metrics

    known = {f.name for settings in (ModelSettings, DataflowSettings, DeadLetterLimits) for f in fields(settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"embed_corpus_task got unknown arguments: {', '.join(unknown)}")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    remote = runner == "DataflowRunner"
    output = _location_of(vectors, remote)
    model = from_mapping(ModelSettings, options)
    model = replace(model, model=_location_of(tuned_model, remote) or model.model)
    dataflow = from_mapping(DataflowSettings, options)
    if remote:
        model = dataflow.model_on_workers(model)
    config = prepare_config(
        _location_of(corpus, remote),
        output,
        model=model,
        task_type=task_type,
        previous=_location_of(previous_vectors, remote),
        chunk_tokens=chunk_tokens,
        chunk_overlap=chunk_overlap,
        dead_letters=from_mapping(DeadLetterLimits, options),
    )
    if evaluation_embeddings is not None:
        local_model = tuned_model.path if tuned_model is not None else model.model
        config = _with_evaluation_vectors(config, evaluation_embeddings, corpus, vectors, remote, local_model)
    beam_args: list[str] = []
    if remote:
        dataflow = replace(
            dataflow,
            project=dataflow.project or default_project(),
            temp_location=dataflow.temp_location or vectors.uri.rstrip("/") + "-dataflow-tmp",
        )
        beam_args = dataflow.beam_args()
    else:
        Path(output).mkdir(parents=True, exist_ok=True)

    def write_resources(project_id: str, region: str, job_id: str) -> None:
        Path(gcp_resources).parent.mkdir(parents=True, exist_ok=True)
        Path(gcp_resources).write_text(gcp_resources_json(project_id, region, job_id))
        logging.info(
            "Dataflow job: https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s", region, job_id, project_id
        )

    result = run_job(config, beam_args, runner=beam_runner, on_submitted=write_resources if remote else None)
    if not remote:  # nothing in the cloud to link or cancel
        Path(gcp_resources).parent.mkdir(parents=True, exist_ok=True)
        Path(gcp_resources).write_text(json.dumps({"resources": []}))
    vectors.metadata.update(
        {
            "model": model.model,
            "task_type": task_type,
            "dimension": model.output_dimensionality or "full",
            "format": "parquet",
            "job_id": result.job_id,
        }
    )
    log_metrics(metrics, dict(result.metrics.items()))
    print(result.summary())
    return result
