"""Submitting compiled pipeline YAML to Vertex AI Pipelines with the google-cloud-aiplatform SDK.

    embedpipe submit build/pipelines/tune_and_index.yaml --project my-project --location us-central1 \\
        --pipeline-root gs://my-bucket/pipeline-root --service-account runner@my-project.iam.gserviceaccount.com \\
        --param corpus_path=gs://my-bucket/data/corpus.jsonl --param train_steps=1000 --label team=search \\
        --encryption-spec-key-name projects/my-project/locations/us-central1/keyRings/r/cryptoKeys/k

Not run live from where embedpipe is developed (no Google Cloud access): the tests check the calls made
on a fake of the SDK's `PipelineJob`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_KMS_KEY = re.compile(r"^projects/[^/]+/locations/(?P<location>[^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+$")
#: Pipeline parameters that take the run's CMEK key unless `--param` sets them: the resources the pipeline's
#: steps create outside the run (Model Registry, endpoint, fine-tune CustomJob; the Dataflow job).
KEY_PARAMETERS = ("encryption_spec_key_name", "dataflow_kms_key")


@dataclass(frozen=True)
class Submission:
    """What to submit, checked before any API call.

    Attributes:
        template_path: Compiled pipeline YAML (from compile.py).
        project: Google Cloud project id.
        location: Vertex AI region, e.g. us-central1.
        pipeline_root: `gs://` folder for the run's artifacts.
        parameter_values: Pipeline parameters; each must be declared by the pipeline.
        service_account: Service account the run uses (recommended; the default compute account otherwise).
        labels: Vertex labels (lowercase keys and values).
        enable_caching: None = the pipeline's own setting; True/False forces it for every task.
        display_name: Run display name (the pipeline name when empty).
        network: VPC network for the run, `projects/<number>/global/networks/<name>`.
        encryption_spec_key_name: Cloud KMS key of the run (`projects/P/locations/L/keyRings/R/cryptoKeys/K`,
            in `location`): the PipelineJob and what it creates are encrypted with it; the pipeline's
            `KEY_PARAMETERS` default to it.
    """

    template_path: str
    project: str
    location: str
    pipeline_root: str
    parameter_values: dict = field(default_factory=dict)
    service_account: str = ""
    labels: dict = field(default_factory=dict)
    enable_caching: bool | None = None
    display_name: str = ""
    network: str = ""
    encryption_spec_key_name: str = ""


def pipeline_parameters(template_path: str) -> dict[str, dict]:
    """Returns the root input parameters a compiled pipeline declares (name -> spec)."""
    import yaml

    if not Path(template_path).is_file():
        raise FileNotFoundError(f"{template_path}: no such compiled pipeline; run `python compile.py` first")
    spec = yaml.safe_load(Path(template_path).read_text(encoding="utf-8"))
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def check_submission(submission: Submission) -> list[str]:
    """Returns every problem with a submission (empty when it may be sent)."""
    problems = []
    if not Path(submission.template_path).is_file():
        return [f"{submission.template_path}: no such compiled pipeline; run `python compile.py` first"]
    declared = pipeline_parameters(submission.template_path)
    for name in submission.parameter_values:
        if name not in declared:
            problems.append(
                f"parameter {name!r} is not declared by {submission.template_path}; declared: {', '.join(sorted(declared))}"
            )
    missing = [
        name
        for name, spec in declared.items()
        if not spec.get("isOptional") and name not in submission.parameter_values
    ]
    if missing:
        problems.append(f"required parameter(s) not given: {', '.join(sorted(missing))}")
    if not submission.project:
        problems.append("--project is required")
    if not submission.location:
        problems.append("--location is required")
    if not submission.pipeline_root.startswith("gs://"):
        problems.append(f"--pipeline-root must be a gs:// folder, got {submission.pipeline_root!r}")
    for key, value in submission.labels.items():
        if not _LABEL.match(key) or not re.match(r"^[a-z0-9_-]{0,63}$", str(value)):
            problems.append(f"label {key}={value} is not a valid Vertex label (lowercase letters, digits, _ and -)")
    if submission.encryption_spec_key_name:
        key = _KMS_KEY.match(submission.encryption_spec_key_name)
        if not key:
            problems.append(
                f"--encryption-spec-key-name {submission.encryption_spec_key_name!r} is not a Cloud KMS key name: "
                "projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        elif key["location"] != submission.location:
            problems.append(
                f"--encryption-spec-key-name is a key in {key['location']}, but the run is in {submission.location}: "
                "Vertex AI takes a key of the run's region"
            )
    return problems


def with_encryption_key(submission: Submission) -> Submission:
    """The submission with the run's CMEK key given to the `KEY_PARAMETERS` the pipeline declares and
    `parameter_values` does not set (so one flag protects the run and the resources its steps create)."""
    if not submission.encryption_spec_key_name or not Path(submission.template_path).is_file():
        return submission
    declared = pipeline_parameters(submission.template_path)
    defaults = {name: submission.encryption_spec_key_name for name in KEY_PARAMETERS if name in declared}
    return replace(submission, parameter_values={**defaults, **submission.parameter_values})


def coerce_parameters(template_path: str, raw: dict[str, str]) -> dict:
    """Turns `--param name=value` strings into the types the compiled pipeline declares."""
    declared = pipeline_parameters(template_path)
    values = {}
    for name, text in raw.items():
        kind = declared.get(name, {}).get("parameterType", "STRING")
        if kind == "NUMBER_INTEGER":
            values[name] = int(text)
        elif kind == "NUMBER_DOUBLE":
            values[name] = float(text)
        elif kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"parameter {name} is a boolean: give true or false, not {text!r}")
            values[name] = text.lower() == "true"
        elif kind in ("STRUCT", "LIST"):
            values[name] = json.loads(text)
        else:
            values[name] = text
    return values


def submit(submission: Submission, *, aiplatform=None):
    """Submits a pipeline run to Vertex AI Pipelines and returns the SDK's PipelineJob.

    Args:
        submission: What to run.
        aiplatform: The `google.cloud.aiplatform` module (tests pass a fake).

    Raises:
        ValueError: listing every problem, before any API call.
    """
    submission = with_encryption_key(submission)
    problems = check_submission(submission)
    if problems:
        raise ValueError("cannot submit:\n  - " + "\n  - ".join(problems))
    if aiplatform is None:
        from google.cloud import aiplatform

    aiplatform.init(project=submission.project, location=submission.location)
    job = aiplatform.PipelineJob(
        display_name=submission.display_name or Path(submission.template_path).stem.replace("_", "-"),
        template_path=submission.template_path,
        pipeline_root=submission.pipeline_root,
        parameter_values=submission.parameter_values,
        enable_caching=submission.enable_caching,
        labels=submission.labels or None,
        project=submission.project,
        location=submission.location,
        encryption_spec_key_name=submission.encryption_spec_key_name or None,
    )
    job.submit(service_account=submission.service_account or None, network=submission.network or None)
    return job
