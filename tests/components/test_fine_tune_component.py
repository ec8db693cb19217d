"""Component tier: the fine_tune component's Python function with artifacts under tmp_path."""

import json
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl

from embedpipe.components import FineTuneOp, fine_tune
from embedpipe.fine_tune import FineTuneError
from embedpipe.images import TRAIN_IMAGE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini"


@pytest.fixture
def inputs(tmp_path) -> dict:
    from embedpipe.prepare import prepare_data

    prepared = prepare_data(
        str(EXAMPLE / "corpus.jsonl"),
        str(EXAMPLE / "queries.jsonl"),
        str(EXAMPLE / "qrels" / "train.tsv"),
        str(EXAMPLE / "qrels" / "test.tsv"),
    )
    made = {
        name: dsl.Dataset(name=name, uri=str(tmp_path / "in" / name))
        for name in ("corpus", "queries", "train_labels", "validation_labels")
    }
    prepared.write(
        made["corpus"].path,
        made["queries"].path,
        {
            "train": made["train_labels"].path,
            "validation": made["validation_labels"].path,
            "test": str(tmp_path / "in" / "test"),
        },
    )
    corpus = pd.read_parquet(made["corpus"].path)
    corpus["text"] = corpus["text"].str.split().str[:40].str.join(" ")
    corpus.to_parquet(made["corpus"].path)
    return made


def test_component_writes_a_model_folder_and_metrics(tmp_path, inputs):
    from sentence_transformers import SentenceTransformer

    assert FineTuneOp is fine_tune and fine_tune.component_spec.implementation.container.image == TRAIN_IMAGE
    outputs = fine_tune.component_spec.outputs
    assert set(outputs) == {"model", "metrics", "report"} and outputs["report"].type == "system.HTML@0.0.1"
    assert len(pd.read_parquet(inputs["validation_labels"].path)) == 0  # an empty validation table is fine
    model = dsl.Model(name="model", uri=str(tmp_path / "out" / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "out" / "metrics"))
    report = dsl.HTML(name="report", uri=str(tmp_path / "out" / "report"))
    fine_tune.python_func(
        **inputs,
        model=model,
        metrics=metrics,
        report=report,
        batch_size=8,
        train_steps=2,
        max_seq_length=48,
        output_dimensionality=128,
    )

    assert SentenceTransformer(model.path, device="cpu").encode(["hello"]).shape == (1, 128)
    assert model.metadata["base_model"] == "default" and model.metadata["task_type"] == "RETRIEVAL_QUERY"
    assert model.metadata["dimension"] == 128 and model.metadata["train_steps"] == 2
    assert json.loads((Path(model.path) / "embedpipe_training.json").read_text())["train_steps"] == 2
    assert metrics.metadata["train_steps"] == 2 and metrics.metadata["train_loss"] > 0
    assert metrics.metadata["samples_per_second"] > 0
    # The training report: named .html (the URI the executor output records), with the loss curve's plot.
    assert report.uri.endswith("/report.html") and report.path.endswith("/report.html")
    page = Path(report.path).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and ">step</text>" in page
    assert "examples / s" in page and "learning rate" in page


def test_component_fails_before_training_on_a_bad_task_type(tmp_path, inputs):
    model = dsl.Model(name="model", uri=str(tmp_path / "out" / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "out" / "metrics"))
    with pytest.raises(FineTuneError, match="unknown task_type"):
        fine_tune.python_func(
            **inputs,
            model=model,
            metrics=metrics,
            report=dsl.HTML(name="report", uri=str(tmp_path / "out" / "report")),
            task_type="RETRIEVE",
            batch_size=8,
            train_steps=2,
        )
    assert not Path(model.path, "model.safetensors").exists()


def test_component_trains_with_one_process_per_visible_gpu(tmp_path, inputs, monkeypatch):
    import torch

    import embedpipe.fine_tune
    from embedpipe.fine_tune import FineTuneResult

    seen = []

    def tune(corpus, queries, train_labels, output_dir, settings, **kwargs):
        seen.append(settings)
        metadata = {"base_model": "default", "task_type": "RETRIEVAL_QUERY", "dimension": 384, "prompts": {}}
        return FineTuneResult(output_dir, {"train_steps": 2}, {**metadata, "train_steps": 2})

    monkeypatch.setattr(embedpipe.fine_tune, "fine_tune", tune)
    for gpus, processes in ((0, 1), (1, 1), (4, 4)):  # Vertex's accelerator_count, as the task sees it
        monkeypatch.setattr(torch.cuda, "device_count", lambda gpus=gpus: gpus)
        model = dsl.Model(name="model", uri=str(tmp_path / f"out-{gpus}" / "model"))
        metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / f"out-{gpus}" / "metrics"))
        report = dsl.HTML(name="report", uri=str(tmp_path / f"out-{gpus}" / "report"))
        fine_tune.python_func(**inputs, model=model, metrics=metrics, report=report, batch_size=8, train_steps=2)
        assert seen[-1].processes == processes and seen[-1].batch_size == 8
