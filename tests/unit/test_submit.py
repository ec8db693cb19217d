"""`embedpipe submit` against a fake of google.cloud.aiplatform (Vertex AI is not reachable here)."""

import json

import pytest

import compile as compile_script
from embedpipe import submit as submit_module
from embedpipe.cli import exits
from embedpipe.cli import main as cli_main


class FakeAiplatform:
    """Records what embedpipe asks of aiplatform.init / PipelineJob / PipelineJob.submit."""

    def __init__(self):
        self.calls = []
        fake = self

        class PipelineJob:
            resource_name = "projects/p/locations/us-central1/pipelineJobs/run-1"

            def __init__(self, **kwargs):
                fake.calls.append(("PipelineJob", kwargs))

            def submit(self, **kwargs):
                fake.calls.append(("submit", kwargs))

        self.PipelineJob = PipelineJob

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    compile_script.compile_all(out)
    return str(out / "pipelines" / "tune_and_index.yaml")


def required_parameters(template):
    declared = submit_module.pipeline_parameters(template)
    return {name: "gs://b/x" for name, spec in declared.items() if not spec.get("isOptional")}


def test_submit_passes_root_service_account_labels_and_caching(template):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template_path=template,
        project="my-project",
        location="europe-west4",
        pipeline_root="gs://bucket/root",
        parameter_values=required_parameters(template),
        service_account="runner@my-project.iam.gserviceaccount.com",
        labels={"team": "search"},
        enable_caching=False,
    )
    submit_module.submit(submission, aiplatform=fake)
    (init, init_kwargs), (_, job_kwargs), (_, submit_kwargs) = fake.calls
    assert init_kwargs == {"project": "my-project", "location": "europe-west4"}
    assert job_kwargs["template_path"] == template and job_kwargs["pipeline_root"] == "gs://bucket/root"
    assert job_kwargs["enable_caching"] is False and job_kwargs["labels"] == {"team": "search"}
    assert job_kwargs["parameter_values"] == required_parameters(template)
    assert submit_kwargs["service_account"] == "runner@my-project.iam.gserviceaccount.com"


def test_every_problem_is_reported_before_any_call(template):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template_path=template,
        project="",
        location="us-central1",
        pipeline_root="/local/root",
        parameter_values={"no_such_parameter": 1},
        labels={"Team": "x"},
    )
    with pytest.raises(ValueError) as info:
        submit_module.submit(submission, aiplatform=fake)
    message = str(info.value)
    for part in (
        "'no_such_parameter' is not declared",
        "required parameter(s) not given",
        "--project is required",
        "must be a gs:// folder",
        "label Team=x",
    ):
        assert part in message
    assert fake.calls == []


def test_cli_parameters_are_typed_from_the_compiled_pipeline(template):
    values = submit_module.coerce_parameters(
        template, {"seed": "7", "test_fraction": "0.25", "corpus_path": "gs://b/c.jsonl"}
    )
    assert values == {"seed": 7, "test_fraction": 0.25, "corpus_path": "gs://b/c.jsonl"}


def test_cli_reports_a_missing_template(tmp_path, capsys):
    argv = ["submit", str(tmp_path / "none.yaml"), "--project", "p", "--pipeline-root", "gs://b/r"]
    assert cli_main(argv) == exits.BAD_INPUT
    assert "no such compiled pipeline" in capsys.readouterr().err


KEY = "projects/my-project/locations/us-central1/keyRings/ring/cryptoKeys/key"


def test_the_cmek_key_protects_the_run_and_fills_the_pipeline_s_key_parameters(template):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template_path=template,
        project="my-project",
        location="us-central1",
        pipeline_root="gs://bucket/root",
        parameter_values=required_parameters(template),
        encryption_spec_key_name=KEY,
    )
    submit_module.submit(submission, aiplatform=fake)
    (_, job_kwargs) = fake.calls[1]
    assert job_kwargs["encryption_spec_key_name"] == KEY
    parameters = job_kwargs["parameter_values"]
    assert parameters["encryption_spec_key_name"] == KEY and parameters["dataflow_kms_key"] == KEY
    # an explicit --param wins; without a key nothing is added
    other = "projects/my-project/locations/us-central1/keyRings/ring/cryptoKeys/dataflow"
    explicit = submit_module.with_encryption_key(
        submit_module.Submission(
            template, "p", "us-central1", "gs://b/r", {"dataflow_kms_key": other}, encryption_spec_key_name=KEY
        )
    )
    assert explicit.parameter_values == {"encryption_spec_key_name": KEY, "dataflow_kms_key": other}
    plain = submit_module.Submission(template, "p", "us-central1", "gs://b/r", {})
    assert submit_module.with_encryption_key(plain) == plain


@pytest.mark.parametrize(
    "key, problem",
    [
        ("my-key", "is not a Cloud KMS key name"),
        (
            "projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k",
            "a key in europe-west4, but the run is in us-central1",
        ),
    ],
)
def test_a_cmek_key_vertex_would_refuse_is_reported_before_any_call(template, key, problem):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template, "p", "us-central1", "gs://b/r", required_parameters(template), encryption_spec_key_name=key
    )
    with pytest.raises(ValueError, match=problem):
        submit_module.submit(submission, aiplatform=fake)
    assert fake.calls == []


def test_cli_passes_the_cmek_key(template, monkeypatch):
    fake = FakeAiplatform()
    real = submit_module.submit
    monkeypatch.setattr(submit_module, "submit", lambda submission: real(submission, aiplatform=fake))
    argv = ["submit", template, "--project", "p", "--pipeline-root", "gs://b/r", "--encryption-spec-key-name", KEY]
    argv += [f"--param={name}={value}" for name, value in required_parameters(template).items()]
    assert cli_main(argv) == 0
    assert fake.calls[1][1]["encryption_spec_key_name"] == KEY


@pytest.mark.parametrize(
    "uri", ["postgresql://u:hunter2@db/x", "host=db user=u password=hunter2 dbname=x", "host=db password"]
)
def test_a_database_uri_with_a_password_or_unparseable_is_refused_before_any_call(template, uri):
    fake = FakeAiplatform()
    submission = submit_module.Submission(
        template_path=template,
        project="my-project",
        location="us-central1",
        pipeline_root="gs://bucket/root",
        parameter_values={**required_parameters(template), "database_uri": uri},
    )
    with pytest.raises(ValueError, match="database_uri") as refused:
        submit_module.submit(submission, aiplatform=fake)
    assert fake.calls == []
    assert "hunter2" not in str(refused.value)
    assert "password in clear" in str(refused.value) or "cannot parse" in str(refused.value)


INDEX = "projects/p/locations/us-central1/indexes/42"


@pytest.mark.parametrize("pipeline", ["tune_and_index", "embed_and_index"])
@pytest.mark.parametrize(
    "given, problem",
    [
        ({}, "vector_target 'vertex_vector_search': target vertex_vector_search needs vector_search_index"),
        ({"vector_search_index": "42"}, "vector_search_index '42' must look like projects/P/locations/L/indexes/ID"),
        ({"vector_search_index": INDEX, "vector_search_update_method": "STREAM_UPDATE"}, "is not one of"),
        ({"vector_search_index": INDEX}, None),
        (  # the pipelines' write_mode defaults to "snapshot": a streamed one needs the previous listing
            {"vector_search_index": INDEX, "vector_search_update_method": "stream"},
            "write_mode 'snapshot' with vector_search_update_method 'stream' needs vector_search_previous_ids",
        ),
        ({"vector_search_index": INDEX, "vector_search_update_method": "stream", "write_mode": "append"}, None),
    ],
)
def test_vertex_vector_search_without_an_index_is_refused_before_any_call(template, pipeline, given, problem):
    template = template.replace("tune_and_index", pipeline)
    values = {**required_parameters(template), "vector_target": "vertex_vector_search", **given}
    submission = submit_module.Submission(template, "p", "us-central1", "gs://b/root", values)
    problems = submit_module.check_submission(submission)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
    postgres = {**values, "vector_target": "postgres"}  # the Vector Search parameters matter only for its target
    assert (
        submit_module.check_submission(submit_module.Submission(template, "p", "us-central1", "gs://b/r", postgres))
        == []
    )


def test_a_streamed_snapshot_needs_the_previous_listing_at_submit_time(tmp_path):
    """With the pipelines' `write_mode` (default "snapshot"), the stream method needs the previous run's listing."""
    declared = {
        "vector_target": {"parameterType": "STRING", "defaultValue": "alloydb", "isOptional": True},
        "write_mode": {"parameterType": "STRING", "defaultValue": "snapshot", "isOptional": True},
        **{
            name: {"parameterType": "STRING", "defaultValue": default, "isOptional": True}
            for name, default in [
                ("vector_search_index", ""),
                ("vector_search_update_method", "batch"),
                ("vector_search_previous_ids", ""),
            ]
        },
    }
    template = tmp_path / "pipeline.yaml"
    template.write_text(json.dumps({"root": {"inputDefinitions": {"parameters": declared}}}))
    values = {
        "vector_target": "vertex_vector_search",
        "vector_search_index": INDEX,
        "vector_search_update_method": "stream",
    }

    def problems(**more):
        submission = submit_module.Submission(str(template), "p", "us-central1", "gs://b/r", {**values, **more})
        return submit_module.check_submission(submission)

    (refused,) = problems()
    assert (
        "write_mode 'snapshot' with vector_search_update_method 'stream' needs vector_search_previous_ids" in refused
    )
    assert problems(write_mode="append") == []
    assert problems(vector_search_previous_ids="gs://b/root/run1/upload-vectors/vector_search_contents/contents") == []
