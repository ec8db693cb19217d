"""Vertex's names in embedpipe: `iterations`, `machine_type`, `task_type: DEFAULT` and Vertex's own model ids."""

import logging
from pathlib import Path

import pytest
from kfp import dsl

from embedpipe import models, prompts
from embedpipe.cli import exits
from embedpipe.cli import main as cli_main
from embedpipe.components import fine_tune, prepare_data
from embedpipe.evaluate import run_evaluation
from embedpipe.fine_tune import FineTuneError, FineTuneSettings
from embedpipe.models.vertex_ids import OPEN_MODEL, OPEN_MULTILINGUAL_MODELS
from embedpipe.vertex import resolve_train_steps, training_resources

GEMMA_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "QuestionAnswering": "task: question answering | query: ",
}
VERTEX_MODELS = [
    "textembedding-gecko@001",
    "textembedding-gecko@002",
    "textembedding-gecko@003",
    "textembedding-gecko@latest",
    "text-embedding-004",
    "text-embedding-005",
    "text-embedding-preview-0409",
    "publishers/google/models/text-embedding-005",
    "projects/p/locations/us-central1/publishers/google/models/textembedding-gecko@003",
]
VERTEX_MULTILINGUAL_MODELS = [
    "textembedding-gecko-multilingual@001",
    "text-multilingual-embedding-002",
    "text-multilingual-embedding-preview-0409",
    "gemini-embedding-001",
]


# --- iterations -> train_steps: one function, used by FineTuneSettings (the fine-tune task) and submit ---


@pytest.mark.parametrize(
    ("train_steps", "iterations", "steps"),
    [
        (0, 1000, 1000),  # the pipeline's defaults: Vertex's 1000 steps
        (None, "1000", 1000),  # a request's JSON string
        (500, 0, 500),
        (500, 1000, 500),  # both given: train_steps (the newer name) wins
        (None, None, 1000),  # neither: the default
        (-3, 1000, -3),  # given, so it wins; the caller range-checks it
    ],
)
def test_resolve_train_steps(train_steps, iterations, steps):
    assert resolve_train_steps(train_steps, iterations, default=1000) == steps


def test_both_names_with_different_values_are_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="embedpipe.vertex"):
        assert resolve_train_steps(200, 300) == 200
    assert "train_steps=200 and iterations=300 both given: train_steps wins" in caplog.text


def test_fine_tune_settings_take_the_step_count_from_iterations():
    assert FineTuneSettings(train_steps=0, iterations=1000).train_steps == 1000
    assert FineTuneSettings(iterations=7).train_steps == 7
    assert FineTuneSettings(train_steps=5, iterations=7).train_steps == 5
    assert FineTuneSettings().train_steps == 100  # the library's default is unchanged
    with pytest.raises(FineTuneError, match="train_steps must be >= 1, got -2"):
        FineTuneSettings(train_steps=0, iterations=-2)


@pytest.mark.slow
def test_iterations_reaches_the_trainer_as_its_step_count(tmp_path, tiny_example_data):
    """The fine-tune task as the pipeline calls it with Vertex's v1.1.1 names: train_steps 0, iterations given."""
    from embedpipe.prepare import prepare_data as prepare

    data = tiny_example_data
    prepared = prepare(
        str(data / "corpus.jsonl"),
        str(data / "queries.jsonl"),
        str(data / "qrels" / "train.tsv"),
        str(data / "qrels" / "test.tsv"),
    )
    inputs = {
        name: dsl.Dataset(name=name, uri=str(tmp_path / "in" / name))
        for name in ("corpus", "queries", "train_labels", "validation_labels")
    }
    prepared.write(
        inputs["corpus"].path,
        inputs["queries"].path,
        {split: inputs[f"{split}_labels"].path for split in ("train", "validation")},
    )
    model = dsl.Model(name="model", uri=str(tmp_path / "out" / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "out" / "metrics"))
    report = dsl.HTML(name="report", uri=str(tmp_path / "out" / "report"))
    fine_tune.python_func(
        **inputs,
        model=model,
        metrics=metrics,
        report=report,
        batch_size=2,
        max_seq_length=32,
        train_steps=0,
        iterations=3,
    )
    assert metrics.metadata["train_steps"] == 3 and model.metadata["train_steps"] == 3


# --- machine_type ---


@pytest.mark.parametrize(
    ("machine_type", "resources"),
    [
        ("n1-standard-16", ("16", "60G")),
        ("n1-highmem-8", ("8", "52G")),
        ("g2-standard-8", ("8", "32G")),
        ("n2-highcpu-32", ("32", "32G")),
        ("a2-highgpu-1g", ("12", "85G")),
        ("a2-ultragpu-2g", ("24", "340G")),
    ],
)
def test_machine_types_are_sized(machine_type, resources):
    assert training_resources(machine_type) == resources


@pytest.mark.parametrize("machine_type", ["", "big", "tpu-v5-lite", "n1-standard-0", "n1-weird-4"])
def test_unknown_machine_types_say_what_to_give_instead(machine_type):
    with pytest.raises(ValueError, match="training_cpu_limit and training_memory_limit"):
        training_resources(machine_type)


# --- task_type DEFAULT ---


def test_default_task_type_uses_the_models_own_query_and_document_prompts():
    p = prompts.resolve_prompts("DEFAULT", GEMMA_PROMPTS)
    assert (p.query, p.document) == (GEMMA_PROMPTS["query"], GEMMA_PROMPTS["document"])
    assert p.format_documents(["body"], ["A title"]) == ["title: A title | text: body"]
    retrieval = prompts.resolve_prompts("RETRIEVAL_QUERY", GEMMA_PROMPTS)
    assert (p.query, p.document) == (retrieval.query, retrieval.document)
    assert prompts.resolve_prompts("default", {}).to_dict() == {"task_type": "DEFAULT", "query": "", "document": ""}


def test_default_task_type_is_accepted_wherever_task_types_are():
    assert "DEFAULT" in prompts.TASK_TYPES and "DEFAULT" in prompts.RETRIEVAL_TASKS
    assert prompts.check_task_type("default") == "DEFAULT"
    assert FineTuneSettings(task_type="DEFAULT").task_type == "DEFAULT"


# --- Vertex's own model ids ---


@pytest.mark.parametrize("model", VERTEX_MODELS)
def test_vertex_models_are_answered_with_the_open_replacement(model):
    with pytest.raises(models.VertexModelError) as info:
        models.check_open_model(model)
    message = str(info.value)
    assert message.startswith("base_model_version_id: ") and "is a Vertex AI model" in message
    assert OPEN_MODEL in message


@pytest.mark.parametrize("model", VERTEX_MULTILINGUAL_MODELS)
def test_vertex_multilingual_models_are_answered_with_open_multilingual_ones(model):
    message = models.vertex_model_message(model)
    assert all(name in message for name in OPEN_MULTILINGUAL_MODELS) and "100+ languages" in message


@pytest.mark.parametrize(
    "model",
    ["default", "", OPEN_MODEL, "BAAI/bge-m3", "text-embedding-3-small", "gs://b/models/textembedding-gecko@003"],
)
def test_open_models_pass(model):
    assert models.check_open_model(model) == model and models.vertex_model_message(model) is None


def test_the_open_replacement_is_the_cloud_default():
    assert OPEN_MODEL == models.CLOUD_DEFAULT_MODEL


def test_every_entry_point_answers_a_vertex_model_before_any_work(tmp_path, example_data, capsys):
    with pytest.raises(models.ModelLoadError, match="Vertex AI model.*embeddinggemma"):
        models.resolve_model_path("textembedding-gecko@003")
    with pytest.raises(FineTuneError, match="base_model: 'text-embedding-005' is a Vertex AI model"):
        FineTuneSettings(base_model="text-embedding-005")
    with pytest.raises(ValueError, match="Vertex AI model"):
        run_evaluation("c", "q", "l", base_model="text-embedding-004")  # before reading any file

    out = tmp_path / "out"
    argv = ["fine-tune", "--data", str(example_data), "--model", "textembedding-gecko@002", "--output-dir", str(out)]
    assert cli_main(argv) == exits.BAD_INPUT
    assert "embedpipe fine-tune: --model: 'textembedding-gecko@002' is a Vertex AI model" in capsys.readouterr().err
    assert not out.exists()


def test_the_pipelines_first_task_answers_a_vertex_model_before_reading_data(tmp_path):
    outputs = {
        name: cls(name=name, uri=str(tmp_path / name))
        for name, cls in dict(
            corpus=dsl.Dataset,
            queries=dsl.Dataset,
            train_labels=dsl.Dataset,
            validation_labels=dsl.Dataset,
            test_labels=dsl.Dataset,
            metrics=dsl.Metrics,
            report=dsl.Markdown,
        ).items()
    }
    with pytest.raises(models.VertexModelError, match="textembedding-gecko@002.*google/embeddinggemma-300m"):
        prepare_data.python_func(
            corpus_path=str(tmp_path / "missing-corpus.jsonl"),  # never read
            queries_path=str(tmp_path / "missing-queries.jsonl"),
            train_labels_path=str(tmp_path / "missing-train.tsv"),
            base_model="textembedding-gecko@002",
            **outputs,
        )
    assert not any(Path(a.path).exists() for a in outputs.values())
