"""Vertex AI's documented tuning requests (fixtures/) against the compiled pipeline and `embedpipe submit`.

Each request body is used as Vertex documents it, strings for numbers included, with only its Vertex base
model swapped for an open one. The compiled YAML decides what is accepted: names it declares, values of the
types it declares (kfp's own type check, and the values `submit` hands to the SDK's `PipelineJob`).
"""

import dataclasses
import functools
import json
from pathlib import Path

import pytest
from kfp import compiler, components, dsl

import compile as compile_script
from embedpipe import submit as submit_module
from embedpipe.cli import exits
from embedpipe.cli import main as cli_main
from tests.unit.test_submit import FakeAiplatform

FIXTURES = Path(__file__).parent / "fixtures"
REQUESTS = sorted(FIXTURES.glob("tune-text-embedding-model-*.request.json"))
MAIN_REQUEST = FIXTURES / "tune-text-embedding-model-v1.1.1.request.json"
OPEN_MODEL = "google/embeddinggemma-300m"
PYTHON_TYPES = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str, "BOOLEAN": bool}


def parameter_values(path: Path, base_model: str | None = OPEN_MODEL) -> dict:
    values = dict(json.loads(path.read_text())["runtimeConfig"]["parameterValues"])
    if base_model is not None:
        values["base_model_version_id"] = base_model
    return values


def open_request(path: Path, tmp_path: Path) -> Path:
    """The request body with an open base model, written beside the test."""
    body = json.loads(path.read_text())
    body["runtimeConfig"]["parameterValues"]["base_model_version_id"] = OPEN_MODEL
    target = tmp_path / path.name
    target.write_text(json.dumps(body))
    return target


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("build")
    compile_script.compile_all(out)
    return str(out / "pipelines" / "tune_and_index.yaml")


@pytest.fixture(scope="module")
def declared(template) -> dict:
    return submit_module.pipeline_parameters(template)


def test_the_fixtures_cover_the_documented_template_versions():
    versions = {json.loads(p.read_text())["templateUri"].rsplit("/", 1)[-1] for p in REQUESTS}
    assert versions == {"v1.1.1", "v1.1.2", "v1.1.3", "v1.1.4"}
    main = parameter_values(MAIN_REQUEST, base_model=None)
    assert main["batch_size"] == "128" and main["iterations"] == "1000"  # JSON strings, as documented


@pytest.mark.parametrize("request_path", REQUESTS, ids=lambda p: p.name)
def test_every_documented_parameter_is_declared_with_a_type_its_value_converts_to(request_path, template, declared):
    values = parameter_values(request_path)
    assert set(values) <= set(declared), set(values) - set(declared)
    required = {name for name, spec in declared.items() if not spec.get("isOptional")}
    assert required <= set(values)
    typed = submit_module.coerce_parameters(template, values)
    for name, value in typed.items():
        assert type(value) is PYTHON_TYPES[declared[name]["parameterType"]], (name, value)


@pytest.mark.parametrize("request_path", REQUESTS, ids=lambda p: p.name)
def test_kfp_accepts_the_typed_values_as_arguments_of_the_compiled_pipeline(request_path, template):
    compiled = components.load_component_from_file(template)
    typed = submit_module.coerce_parameters(template, parameter_values(request_path))

    @dsl.pipeline(name="vertex-request")
    def vertex_request():
        compiled(**typed)  # kfp checks each constant against the input type the YAML declares

    compiler.Compiler().compile(vertex_request, str(Path(template).parent / "vertex-request.yaml"))


def test_the_untyped_strings_are_what_submit_must_convert(template):
    compiled = components.load_component_from_file(template)
    with pytest.raises(Exception, match="(batch_size|iterations).*NUMBER_INTEGER"):

        @dsl.pipeline(name="untyped")
        def untyped():
            compiled(**parameter_values(MAIN_REQUEST))


def test_submit_sends_the_v111_request_typed(template):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template_path=template,
        project="PROJECT_ID",
        location="us-central1",
        pipeline_root="gs://BUCKET/pipeline-scratch",
        parameter_values=parameter_values(MAIN_REQUEST),
    )
    submit_module.submit(submission, aiplatform=fake)
    (_, job_kwargs) = fake.calls[1]
    sent = job_kwargs["parameter_values"]
    assert sent["batch_size"] == 128 and sent["iterations"] == 1000
    assert type(sent["batch_size"]) is int and type(sent["iterations"]) is int
    assert sent["task_type"] == "RETRIEVAL_DOCUMENT" and sent["base_model_version_id"] == OPEN_MODEL
    assert sent["project"] == "PROJECT_ID" and sent["location"] == "us-central1"


@pytest.mark.parametrize("request_path", REQUESTS, ids=lambda p: p.name)
def test_embedpipe_submit_takes_each_request_body_as_it_is(request_path, template, tmp_path, monkeypatch, capsys):
    fake = FakeAiplatform()
    monkeypatch.setattr(submit_module, "submit", functools.partial(submit_module.submit, aiplatform=fake))
    argv = ["submit", template, "--project", "p", "--request", str(open_request(request_path, tmp_path))]
    assert cli_main(argv) == 0, capsys.readouterr().err
    body = json.loads(request_path.read_text())
    job_kwargs = fake.calls[1][1]
    assert job_kwargs["pipeline_root"] == body["runtimeConfig"]["gcsOutputDirectory"]
    assert job_kwargs["display_name"] == body["displayName"]
    declared = submit_module.pipeline_parameters(template)
    for name, value in job_kwargs["parameter_values"].items():
        assert type(value) is PYTHON_TYPES[declared[name]["parameterType"]], (name, value)
    assert set(parameter_values(request_path)) <= set(job_kwargs["parameter_values"])


def test_machine_type_becomes_the_fine_tune_tasks_cpus_and_memory(template):
    fake = FakeAiplatform()
    path = FIXTURES / "tune-text-embedding-model-v1.1.1.notebook.request.json"
    submission = submit_module.Submission(
        template_path=template,
        project="p",
        location="us-central1",
        pipeline_root="gs://b/r",
        parameter_values=parameter_values(path),
    )
    submit_module.submit(submission, aiplatform=fake)
    sent = fake.calls[1][1]["parameter_values"]
    assert sent["machine_type"] == "n1-standard-16" and sent["accelerator_type"] == "NVIDIA_TESLA_T4"
    assert (sent["training_cpu_limit"], sent["training_memory_limit"]) == ("16", "60G")
    explicit = submit_module.submission_parameters(
        dataclasses.replace(submission, parameter_values={**sent, "training_cpu_limit": "4"})
    )
    assert explicit["training_cpu_limit"] == "4"  # an explicit limit wins over the machine type's


def test_the_request_as_documented_is_answered_with_the_open_model_before_any_call(template, capsys, monkeypatch):
    fake = FakeAiplatform()
    monkeypatch.setattr(submit_module, "submit", functools.partial(submit_module.submit, aiplatform=fake))
    argv = ["submit", template, "--project", "p", "--request", str(MAIN_REQUEST)]
    assert cli_main(argv) == exits.BAD_INPUT
    err = capsys.readouterr().err
    assert "'base_model_version_id'" in err and "textembedding-gecko@002" in err and OPEN_MODEL in err
    assert fake.calls == []


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("batch_size=abc", "parameter 'batch_size' must be an integer (NUMBER_INTEGER"),
        ("iterations=1.5", "parameter 'iterations' must be an integer (NUMBER_INTEGER"),
        ("learning_rate_multiplier=fast", "parameter 'learning_rate_multiplier' must be a number (NUMBER_DOUBLE"),
        ("register_model=yes", "parameter 'register_model' must be a boolean (true or false) (BOOLEAN"),
    ],
)
def test_a_bad_param_names_the_parameter_and_its_type(template, capsys, param, expected):
    argv = ["submit", template, "--project", "p", "--pipeline-root", "gs://b/r", "--param", param]
    for name in ("corpus_path", "queries_path", "train_label_path"):
        argv += ["--param", f"{name}=gs://b/{name}"]
    assert cli_main(argv) == exits.BAD_INPUT
    err = capsys.readouterr().err
    assert expected in err, err
    assert "invalid literal" not in err


def test_submit_checks_task_type_steps_and_machine_type_before_any_call(template):
    fake = FakeAiplatform()
    values = {
        **parameter_values(MAIN_REQUEST),
        "task_type": "RETRIEVE",
        "iterations": "-5",
        "machine_type": "tpu-v5-lite",
    }
    submission = submit_module.Submission(
        template_path=template, project="p", location="us-central1", pipeline_root="gs://b/r", parameter_values=values
    )
    with pytest.raises(ValueError) as info:
        submit_module.submit(submission, aiplatform=fake)
    message = str(info.value)
    assert "unknown task_type 'RETRIEVE'" in message and "DEFAULT" in message
    assert "training steps must be >= 1" in message and "machine_type 'tpu-v5-lite'" in message
    assert fake.calls == []


def test_iterations_reaches_the_fine_tune_task_beside_train_steps(template):
    import yaml

    spec = yaml.safe_load(Path(template).read_text())
    inputs = spec["root"]["dag"]["tasks"]["fine-tune"]["inputs"]["parameters"]
    assert inputs["iterations"] == {"componentInputParameter": "iterations"}
    assert inputs["train_steps"] == {"componentInputParameter": "train_steps"}
    assert spec["root"]["dag"]["tasks"]["prepare-data"]["inputs"]["parameters"]["base_model"] == {
        "componentInputParameter": "base_model_version_id"
    }
    declared = spec["root"]["inputDefinitions"]["parameters"]
    # Neither given: iterations' default (1000, Vertex's) is the step count, as train_steps' was before.
    assert declared["train_steps"]["defaultValue"] == 0 and declared["iterations"]["defaultValue"] == 1000
    assert declared["machine_type"]["parameterType"] == "STRING"
