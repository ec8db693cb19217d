"""Dataflow facts the launchers share: the `gcp_resources` of a job, the project of the environment, and
`DataflowJobs` (a job's state, waiting until it runs, draining it) through the Dataflow API.

The worker options themselves are `embedpipe.embed.settings.DataflowSettings.beam_args`.

Example:
    >>> json.loads(gcp_resources_json("p", "us-central1", "job-1"))["resources"][0]["resourceType"]
    'DataflowJob'
"""

from __future__ import annotations

import json
import os
import time

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


#: States after which a Dataflow job does nothing more.
TERMINAL_STATES = (
    "JOB_STATE_DONE",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_UPDATED",
    "JOB_STATE_DRAINED",
)


class DataflowJobs:
    """One region's Dataflow jobs through the Dataflow API (`projects.locations.jobs` get and update).

    Args:
        project: The jobs' project.
        location: The jobs' region.
        client: A `google.cloud.dataflow.JobsV1Beta3Client`, or a fake with its `get_job` and `update_job`
            (tests); created on first use otherwise.
    """

    def __init__(self, project: str, location: str, client=None):
        self.project, self.location, self._client = project, location, client

    @property
    def client(self):
        if self._client is None:
            from embedpipe.extras import require

            dataflow_v1beta3 = require("google.cloud.dataflow_v1beta3", "dataflow", "the Dataflow API")

            self._client = dataflow_v1beta3.JobsV1Beta3Client()
        return self._client

    def _request(self, job_id: str, **extra) -> dict:
        return {"project_id": self.project, "location": self.location, "job_id": job_id, **extra}

    def state(self, job_id: str) -> str:
        """The job's current state, e.g. "JOB_STATE_RUNNING"."""
        state = self.client.get_job(request=self._request(job_id)).current_state
        return getattr(state, "name", str(state))

    def drain(self, job_id: str) -> None:
        """Asks Dataflow to drain the job: it stops reading, finishes what it has read, then ends (DRAINED)."""
        self.client.update_job(request=self._request(job_id, job={"requested_state": "JOB_STATE_DRAINING"}))

    def wait_until_running(
        self, job_id: str, *, timeout_seconds: float = 1800, poll_seconds: float = 10, sleep=time.sleep
    ) -> str:
        """Waits until the job runs (a streaming job never ends; its launcher returns then).

        Raises:
            RuntimeError: the job ended (failed, cancelled, ...) or did not start within `timeout_seconds`.
        """
        waited = 0.0
        while True:
            state = self.state(job_id)
            if state == "JOB_STATE_RUNNING":
                return state
            if state in TERMINAL_STATES:
                raise RuntimeError(f"Dataflow job {job_id} ended in state {state} before it ran; see its logs")
            if waited >= timeout_seconds:
                raise RuntimeError(
                    f"Dataflow job {job_id} is still {state} after {timeout_seconds:g} s; it was left as it is"
                )
            sleep(poll_seconds)
            waited += poll_seconds
