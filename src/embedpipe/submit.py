"""Submitting compiled pipeline YAML to Vertex AI Pipelines with the google-cloud-aiplatform SDK.

    embedpipe submit build/pipelines/tune_and_index.yaml --project my-project --location us-central1 \\
        --pipeline-root gs://my-bucket/pipeline-root --service-account runner@my-project.iam.gserviceaccount.com \\
        --param corpus_path=gs://my-bucket/data/corpus.jsonl --param train_steps=1000 --label team=search \\
        --encryption-spec-key-name projects/my-project/locations/us-central1/keyRings/r/cryptoKeys/k

A Vertex AI user's own request body works as it is: `--request tune.request.json` takes its
`runtimeConfig.parameterValues` (numbers given as JSON strings, `"batch_size": "128"`, are typed from the
compiled pipeline), its `gcsOutputDirectory` and `displayName`. Before anything is sent, every parameter is
checked against the compiled YAML (name and type), a Vertex AI model id as the base model is answered with
the open model that replaces it, and `machine_type` is turned into the fine-tune task's vCPUs and memory
(`embedpipe.vertex`).

Not run live from where embedpipe is developed (no Google Cloud access): the tests check the calls made
on a fake of the SDK's `PipelineJob`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from embedpipe.models import vertex_model_message
from embedpipe.prompts import check_task_type
from embedpipe.vertex import resolve_train_steps, training_resources

_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: How each compiled parameter type is named in an error.
_KINDS = {
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "a boolean (true or false)",
    "STRING": "a string",
    "STRUCT": "a JSON object",
    "LIST": "a JSON list",
}
#: Parameters that name a base model, in the pipelines compile.py writes.
MODEL_PARAMETERS = ("base_model_version_id", "model")
_KMS_KEY = re.compile(r"^projects/[^/]+/locations/(?P<location>[^/]+)/keyRings/[^/]+/cryptoKeys/[^/]+$")
#: Pipeline parameters that take the run's CMEK key unless `--param` sets them: the resources the pipeline's
#: steps create outside the run (Model Registry, endpoint, fine-tune CustomJob; the Dataflow job).
KEY_PARAMETERS = ("encryption_spec_key_name", "dataflow_kms_key")
#: Pipeline parameters holding a Postgres connection string: refused with a password in clear (Vertex keeps
#: parameter values in the run's record and UI).
CONNECTION_PARAMETERS = ("database_uri",)


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
    """Returns the root input parameters a compiled pipeline declares (name -> spec).

    The YAML is parsed once per file version (a compiled pipeline takes about half a second to parse, and one
    submission asks several times); a recompiled file is read again.
    """
    path = Path(template_path)
    if not path.is_file():
        raise FileNotFoundError(f"{template_path}: no such compiled pipeline; run `python compile.py` first")
    return dict(_declared_parameters(str(path.resolve()), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _declared_parameters(path: str, mtime_ns: int) -> dict[str, dict]:
    import yaml

    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def read_request(path: str) -> dict:
    """Reads a Vertex AI `pipelineJobs.create` request body, as Vertex's REST samples send it.

    Args:
        path: A JSON file: the whole request body (`runtimeConfig.parameterValues`, ...) or just an object
            of parameter values. Its `templateUri` is not used: the compiled YAML given to submit is what runs.

    Returns:
        `parameter_values` (as they are in the file), `pipeline_root` (`runtimeConfig.gcsOutputDirectory`)
        and `display_name` (`displayName`), "" where the body has none.

    Raises:
        ValueError: naming the file, when it is not JSON or not an object.
    """
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON request body: {err}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path}: a request body is a JSON object, got {type(body).__name__}")
    runtime = body.get("runtimeConfig")
    if not isinstance(runtime, dict):
        return {"parameter_values": body, "pipeline_root": "", "display_name": ""}
    return {
        "parameter_values": dict(runtime.get("parameterValues") or {}),
        "pipeline_root": runtime.get("gcsOutputDirectory") or "",
        "display_name": body.get("displayName") or "",
    }


def _typed(kind: str, value):
    """`value` as the compiled parameter type `kind`; ValueError when it is not one."""
    if kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE") and not isinstance(value, bool):
        if isinstance(value, str):
            value = value.strip()
            return int(value) if kind == "NUMBER_INTEGER" else float(value)
        if kind == "NUMBER_DOUBLE" and isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, int) or isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind in ("STRUCT", "LIST"):
        parsed = json.loads(value) if isinstance(value, str) else value
        if isinstance(parsed, dict if kind == "STRUCT" else list):
            return parsed
    elif isinstance(value, str):
        return value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a STRING parameter given as a JSON number: "8" for 8
    raise ValueError(value)


def _typed_values(template_path: str, raw: dict) -> tuple[dict, list[str]]:
    """The values typed as the compiled pipeline declares them, and a problem for each that is not."""
    declared = pipeline_parameters(template_path)
    values, problems = {}, []
    for name, value in raw.items():
        if name not in declared:  # left as it is: check_submission says it is not declared
            values[name] = value
            continue
        kind = declared[name].get("parameterType", "STRING")
        try:
            values[name] = _typed(kind, value)
        except ValueError:
            problems.append(
                f"parameter {name!r} must be {_KINDS.get(kind, kind)} ({kind} in {Path(template_path).name}), "
                f"got {value!r}"
            )
    return values, problems


def _vertex_problems(declared: dict, values: dict) -> list[str]:
    """What Vertex users send that embedpipe answers before submitting: models, task type, steps, machine."""
    problems = []
    for name in MODEL_PARAMETERS:
        message = vertex_model_message(values[name]) if isinstance(values.get(name), str) else None
        if message:
            problems.append(f"parameter {name!r}: {message}")
    if isinstance(values.get("task_type"), str):
        try:
            check_task_type(values["task_type"])
        except ValueError as err:
            problems.append(f"parameter 'task_type': {err}")
    if "train_steps" in declared and "iterations" in declared:
        steps = {name: values.get(name, declared[name].get("defaultValue")) for name in ("train_steps", "iterations")}
        if all(isinstance(v, (int, float)) or v is None for v in steps.values()):
            if resolve_train_steps(steps["train_steps"], steps["iterations"], default=1) < 1:
                problems.append(
                    f"training steps must be >= 1, got train_steps={steps['train_steps']}, "
                    f"iterations={steps['iterations']}"
                )
    if values.get("machine_type") and isinstance(values["machine_type"], str):
        try:
            training_resources(values["machine_type"])
        except ValueError as err:
            problems.append(f"parameter 'machine_type': {err}")
    return problems


def _connection_problems(values: dict) -> list[str]:
    from embedpipe.vectorstore.conninfo import ConnectionConfigError, check_no_password

    problems = []
    for name in CONNECTION_PARAMETERS:
        if isinstance(values.get(name), str) and values[name]:
            try:
                check_no_password(values[name], what=f"parameter {name!r}")
            except ConnectionConfigError as err:
                problems.append(str(err))
    return problems


def _vector_search_problems(declared: dict, values: dict) -> list[str]:
    """`vector_target="vertex_vector_search"` without an index (or with settings the upload would refuse)."""

    def value(name: str, default: str = "") -> str:
        given = values.get(name, declared.get(name, {}).get("defaultValue", default))
        return given if isinstance(given, str) else default

    if "vector_search_index" not in declared or value("vector_target") != "vertex_vector_search":
        return []
    from embedpipe.vectorstore.vector_search import VectorSearchSettings

    settings = VectorSearchSettings(
        index=value("vector_search_index"),
        contents_delta_uri="<the upload task's vector_search_contents output>",
        update_method=value("vector_search_update_method", "batch"),
        write_mode=value("write_mode", "append"),  # the upload component's default where the pipeline has none
        previous_ids=value("vector_search_previous_ids"),
    )
    try:
        settings.check()
    except ValueError as err:
        return [f"vector_target 'vertex_vector_search': {err}"]
    return []


def submission_parameters(submission: Submission) -> dict:
    """The parameter values that are sent: typed from the compiled YAML, plus what `machine_type` means.

    A `machine_type` (Vertex's training machine) becomes `training_cpu_limit` and `training_memory_limit`
    (`embedpipe.vertex.training_resources`), and `training_machine_type` where the pipeline has it (the
    CustomJob form), unless those are given too; the parameters are otherwise sent as
    given (`iterations` included: the fine-tune task resolves it against `train_steps`).

    Raises:
        ValueError: a value is not of its parameter's type, or `machine_type` is not one embedpipe can size.
    """
    values, problems = _typed_values(submission.template_path, submission.parameter_values)
    if problems:
        raise ValueError("cannot submit:\n  - " + "\n  - ".join(problems))
    declared = pipeline_parameters(submission.template_path)
    if values.get("machine_type") and {"training_cpu_limit", "training_memory_limit"} <= set(declared):
        cpu, memory = training_resources(values["machine_type"])
        values.setdefault("training_cpu_limit", cpu)
        values.setdefault("training_memory_limit", memory)
    if values.get("machine_type") and "training_machine_type" in declared:  # the CustomJob form names it
        values.setdefault("training_machine_type", values["machine_type"])
    return values


def check_submission(submission: Submission) -> list[str]:
    """Returns every problem with a submission (empty when it may be sent)."""
    problems = []
    if not Path(submission.template_path).is_file():
        return [f"{submission.template_path}: no such compiled pipeline; run `python compile.py` first"]
    declared = pipeline_parameters(submission.template_path)
    values, type_problems = _typed_values(submission.template_path, submission.parameter_values)
    problems += type_problems + _vertex_problems(declared, values) + _connection_problems(values)
    problems += _vector_search_problems(declared, values)
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


def coerce_parameters(template_path: str, raw: dict) -> dict:
    """Types parameter values (`--param name=value` strings, or a request body's JSON values) as the compiled
    pipeline declares them.

    Args:
        template_path: Compiled pipeline YAML.
        raw: Parameter values; a string is parsed as the declared type ("128" for an integer, "true" for a
            boolean, JSON for a struct or list), a JSON value is checked against it. Undeclared names stay as
            they are (`check_submission` reports them).

    Returns:
        The typed values.

    Raises:
        ValueError: naming every parameter whose value is not of its type, and the type expected.
    """
    values, problems = _typed_values(template_path, raw)
    if problems:
        raise ValueError("bad parameter value(s):\n  - " + "\n  - ".join(problems))
    return values


def submit(submission: Submission, *, aiplatform=None):
    """Submits a pipeline run to Vertex AI Pipelines and returns the SDK's PipelineJob.

    Args:
        submission: What to run; its parameter values are sent typed as the compiled YAML declares them
            (`submission_parameters`).
        aiplatform: The `google.cloud.aiplatform` module (tests pass a fake).

    Raises:
        ValueError: listing every problem, before any API call.
    """
    submission = with_encryption_key(submission)
    problems = check_submission(submission)
    if problems:
        raise ValueError("cannot submit:\n  - " + "\n  - ".join(problems))
    submission = replace(submission, parameter_values=submission_parameters(submission))
    if aiplatform is None:
        from embedpipe.extras import require

        aiplatform = require("google.cloud.aiplatform", "cloud", "embedpipe submit")

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
