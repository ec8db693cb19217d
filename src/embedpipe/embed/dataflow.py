"""Dataflow facts the launchers share: the `gcp_resources` of a job, and the project of the environment.

The worker options themselves are `embedpipe.embed.settings.DataflowSettings.beam_args`.

Example:
    >>> json.loads(gcp_resources_json("p", "us-central1", "job-1"))["resources"][0]["resourceType"]
    'DataflowJob'
"""

from __future__ import annotations

import json
import os

DATAFLOW_JOB_URI = "https://dataflow.googleapis.com/v1b3/projects/{project}/locations/{location}/jobs/{job_id}"


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
