"""Component tier: the prepare_data component's Python function with artifacts under tmp_path."""

import pandas as pd
import pytest
from kfp import dsl

from embedpipe.components import PrepareDataOp, prepare_data
from embedpipe.images import BASE_IMAGE
from embedpipe.validation import DataValidationError


def artifacts(tmp_path, **kinds):
    made = {}
    for name, cls in kinds.items():
        artifact = cls(name=name, uri=str(tmp_path / name))
        made[name] = artifact
    return made


OUTPUTS = dict(
    corpus=dsl.Dataset,
    queries=dsl.Dataset,
    train_labels=dsl.Dataset,
    validation_labels=dsl.Dataset,
    test_labels=dsl.Dataset,
    metrics=dsl.Metrics,
    report=dsl.Markdown,
)


def test_component_writes_typed_artifacts_and_metrics(tmp_path, example_data):
    out = artifacts(tmp_path, **OUTPUTS)
    prepare_data.python_func(
        corpus_path=str(example_data / "corpus.jsonl"),
        queries_path=str(example_data / "queries.jsonl"),
        train_labels_path=str(example_data / "qrels" / "train.tsv"),
        test_labels_path=str(example_data / "qrels" / "test.tsv"),
        validation_fraction=0.1,
        **out,
    )
    assert len(pd.read_parquet(out["corpus"].path)) == 400
    assert set(pd.read_parquet(out["test_labels"].path).columns) == {"query-id", "corpus-id", "score"}
    metrics = out["metrics"].metadata
    assert metrics["corpus_documents"] == 400 and metrics["test_queries"] == 60
    assert metrics["train_queries"] + metrics["validation_queries"] == 120 and metrics["validation_queries"] == 12
    assert "# Data preparation report" in open(out["report"].path, encoding="utf-8").read()


def test_component_fails_before_writing_any_artifact(tmp_path, example_data):
    with open(example_data / "qrels" / "train.tsv", "a") as f:
        f.write("nope\tnope\t1\n")
    out = artifacts(tmp_path, **OUTPUTS)
    with pytest.raises(DataValidationError, match="unknown query id 'nope'"):
        prepare_data.python_func(
            corpus_path=str(example_data / "corpus.jsonl"),
            queries_path=str(example_data / "queries.jsonl"),
            train_labels_path=str(example_data / "qrels" / "train.tsv"),
            **out,
        )
    assert not any(tmp_path.joinpath(name).exists() for name in OUTPUTS)


def test_component_is_lightweight_on_our_image():
    spec = prepare_data.pipeline_spec
    executor = next(iter(spec.deployment_spec["executors"].values()))
    assert executor["container"]["image"] == BASE_IMAGE
    assert "pip install" not in " ".join(executor["container"]["command"])
    assert PrepareDataOp is prepare_data
