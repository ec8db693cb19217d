"""The whole tune_and_index pipeline: compiled YAML checks, and a kfp.local run on a tiny slice that ends
with rows in the real embedded Postgres."""

import json
import shlex
from pathlib import Path

import psycopg
import pytest
import yaml

import compile as compile_script
from embedpipe import __version__
from embedpipe.cli import exits
from embedpipe.local import LOCAL_OVERRIDES, comparison_task, run_locally
from embedpipe.pipelines import tune_and_index


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    compile_script.compile_all(out)
    return yaml.safe_load((out / "pipelines" / "tune_and_index.yaml").read_text())


def executor_of(spec, task_name):
    """The deployment executor of a task, found through its component, wherever the task is nested."""

    def find(dag):
        for name, task in dag["tasks"].items():
            if name == task_name:
                return task["componentRef"]["name"]
            sub = spec["components"][task["componentRef"]["name"]].get("dag")
            if sub:
                found = find(sub)
                if found:
                    return found
        return None

    component = find(spec["root"]["dag"])
    assert component, f"no task {task_name}"
    label = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]


def test_fine_tune_requests_the_accelerator_from_the_parameters(compiled):
    resources = executor_of(compiled, "fine-tune")["container"]["resources"]
    assert "pipelinechannel--accelerator_type" in resources["accelerator"]["resourceType"]
    assert "pipelinechannel--accelerator_count" in resources["accelerator"]["resourceCount"]
    assert "pipelinechannel--training_cpu_limit" in resources["resourceCpuLimit"]


def test_images_are_this_versions(compiled):
    images = {e["container"]["image"] for e in compiled["deploymentSpec"]["executors"].values() if "container" in e}
    ours = {i for i in images if "/embedpipe-" in i}
    assert ours and all(i.endswith(":" + __version__) for i in ours)
    assert any("/embedpipe-train:" in i for i in ours), "fine_tune runs on the training image"


def test_parameters_and_defaults_mirror_vertex(compiled):
    parameters = compiled["root"]["inputDefinitions"]["parameters"]
    for name in ("corpus_path", "queries_path", "train_label_path"):
        assert not parameters[name].get("isOptional")
    defaults = {name: spec.get("defaultValue") for name, spec in parameters.items()}
    assert defaults["base_model_version_id"] == "google/embeddinggemma-300m"
    assert defaults["task_type"] == "RETRIEVAL_QUERY"
    assert defaults["accelerator_type"] == "NVIDIA_L4" and defaults["accelerator_count"] == 1
    assert defaults["deploy_model"] is False and defaults["register_model"] is True
    assert defaults["project"] == "{{$.pipeline_google_cloud_project_id}}"
    for name in (
        "test_label_path",
        "validation_label_path",
        "batch_size",
        "train_steps",
        "learning_rate_multiplier",
        "output_dimensionality",
        "location",
        "quality_margin",
        "index_with_base_model",
        "index_corpus_path",
        "validation_steps",
        "early_stopping_patience",
        "base_learning_rate",
    ):
        assert name in parameters, name
    # The validation-driven training's settings reach the fine-tune task.
    fine_tune = compiled["root"]["dag"]["tasks"]["fine-tune"]["inputs"]["parameters"]
    for name in ("validation_steps", "early_stopping_patience", "base_learning_rate"):
        assert fine_tune[name]["componentInputParameter"] == name, fine_tune[name]


def test_the_quality_gate_guards_registration_and_indexing(compiled):
    branches = compiled["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conditions = sorted(t["triggerPolicy"]["condition"] for t in branches.values())
    assert any(c.endswith("tuned_is_better'] == true") for c in conditions), conditions
    assert any("index_with_base_model'] == true" in c and c.startswith("!(") for c in conditions), conditions
    text = yaml.safe_dump(compiled)
    for needed in ("register-model", "embed-corpus", "upload-vectors", "quality-gate-failed", "deploy-model"):
        assert needed in text, needed


@pytest.mark.slow
def test_full_pipeline_runs_locally_and_ends_with_rows_in_postgres(tmp_path, tiny_example_data, pg_uri):
    data = tiny_example_data
    arguments = {
        **LOCAL_OVERRIDES,
        "corpus_path": str(data / "corpus.jsonl"),
        "queries_path": str(data / "queries.jsonl"),
        "train_label_path": str(data / "qrels" / "train.tsv"),
        "test_label_path": str(data / "qrels" / "test.tsv"),
        "train_steps": 2,
        "batch_size": 2,
        "quality_margin": -1.0,  # a 2-step model need not be better: this test is about the plumbing
        "database_uri": pg_uri,
        "vector_table": "full_pipeline",
    }
    run = run_locally(tune_and_index, arguments, pipeline_root=tmp_path / "runs")
    assert comparison_task(run) is not None
    # Both HTML reports under names ending .html, as the tasks' executor outputs record them.
    training = run.uri(run.task("fine-tune"), "report")
    assert training.endswith("/report.html") and ">step</text>" in open(training, encoding="utf-8").read()
    assert run.uri(comparison_task(run), "report").endswith("/report.html")
    with psycopg.connect(pg_uri) as connection:
        rows = connection.execute("SELECT count(*) FROM full_pipeline").fetchone()[0]
    corpus_lines = sum(1 for line in (data / "corpus.jsonl").read_text().splitlines() if line.strip())
    assert rows == corpus_lines


@pytest.mark.slow
def test_embedpipe_run_prints_the_comparison_and_a_search_command_that_works(
    tmp_path, tiny_example_data, pg_uri, capsys
):
    from embedpipe.cli import main

    args = [
        "run",
        "--data",
        str(tiny_example_data),
        "--output-dir",
        str(tmp_path / "runs"),
        "--train-steps",
        "2",
        "--batch-size",
        "2",
        "--margin",
        "-1",
        "--database-uri",
        pg_uri,
        "--table",
        "cli_run",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cloud-only steps skipped locally: package-for-serving + register-model" in out
    assert "Data: 14 documents, 180 queries; labels: 3 train, 0 validation, 5 test" in out
    assert "NDCG@10 on the test labels: base " in out and "quality gate passed" in out
    assert "Vectors: 14 rows in table 'cli_run'" in out
    assert "  snapshot: inserted 14, updated 0, deleted 0" in out  # --write-mode's default, the pipeline's
    assert "Stages: prepare-data " in out and "upload-vectors " in out
    # The printed search command runs, with the tuned model the vectors were embedded with.
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("embedpipe search "))
    assert "/fine-tune/model" in command
    assert main(shlex.split(command)[1:] + ["--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5


@pytest.mark.slow
def test_embedpipe_run_stops_at_the_gate_and_keeps_the_reports(tmp_path, tiny_example_data, pg_uri, capsys):
    from embedpipe.cli import main

    args = [
        "run",
        "--data",
        str(tiny_example_data),
        "--output-dir",
        str(tmp_path / "runs"),
        "--train-steps",
        "1",
        "--batch-size",
        "2",
        "--margin",
        "1",
        "--database-uri",
        pg_uri,
        "--table",
        "never_written",
    ]
    assert main(args) == exits.GATE_FAILED
    captured = capsys.readouterr()
    assert "quality gate did not pass" in captured.out
    assert "stopped at the quality gate" in captured.err and "--index-with-base-model" in captured.err
    report = next(
        line.split(": ", 1)[1] for line in captured.out.splitlines() if line.startswith("Evaluation report: ")
    )
    assert Path(report).exists()
    training = next(
        line.split(": ", 1)[1] for line in captured.out.splitlines() if line.startswith("Training report: ")
    )
    assert training.endswith(".html") and "loss" in Path(training).read_text()
    with psycopg.connect(pg_uri) as connection:
        exists = connection.execute("SELECT to_regclass('never_written')").fetchone()[0]
    assert exists is None
