"""Pipeline tier: evaluate under kfp.local, without and with its optional inputs connected."""

import shutil
from pathlib import Path

from kfp import dsl

from embedpipe.components import evaluate
from embedpipe.local import run_locally
from embedpipe.models import packaged_model_path
from embedpipe.prepare import prepare_data


def test_evaluate_runs_under_kfp_local_with_and_without_a_tuned_model(tmp_path, tiny_example_data):
    data = tiny_example_data
    prepared = prepare_data(
        str(data / "corpus.jsonl"),
        str(data / "queries.jsonl"),
        str(data / "qrels" / "train.tsv"),
        test_labels_path=str(data / "qrels" / "test.tsv"),
    )
    files = {name: str(tmp_path / f"{name}.parquet") for name in ("corpus", "queries", "test")}
    prepared.write(files["corpus"], files["queries"], {"test": files["test"]})
    # A "tuned" model with the base weights. Its path must not contain "python3": kfp.local's
    # SubprocessRunner replaces that string everywhere in the task's command (the packaged model lives
    # under .venv/lib/python3.x), so it is copied out first.
    tuned = shutil.copytree(packaged_model_path(), tmp_path / "tuned")

    # Importers run in-process (no subprocess), so only the two evaluate tasks cost a Python start.
    @dsl.pipeline(name="evaluate-local")
    def evaluate_local(corpus: str, queries: str, labels: str, tuned_uri: str):
        split = {
            name: dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset, reimport=False).output
            for name, uri in (("corpus", corpus), ("queries", queries), ("labels", labels))
        }
        base_only = evaluate(**split)  # task "evaluate": tuned_model and reuse_embeddings not connected
        model = dsl.importer(artifact_uri=tuned_uri, artifact_class=dsl.Model, reimport=False)
        evaluate(
            **split, tuned_model=model.output, reuse_embeddings=base_only.outputs["corpus_embeddings"], margin=0.0
        )  # task "evaluate-2"

    run = run_locally(
        evaluate_local,
        {"corpus": files["corpus"], "queries": files["queries"], "labels": files["test"], "tuned_uri": str(tuned)},
        pipeline_root=tmp_path / "runs",
    )
    base_only, both = run.metadata("evaluate", "metrics"), run.metadata("evaluate-2", "metrics")
    assert base_only["test/base/queries"] == 4 and not any(name.startswith("test/tuned") for name in base_only)
    assert both["test/tuned/ndcg@10"] == both["test/base/ndcg@10"] == base_only["test/base/ndcg@10"]
    assert both["test/tuned_minus_base/ndcg@10"] == 0.0
    assert run.metadata("evaluate-2", "tuned_is_better")["value"] is True
    # The report's file, as the task's executor_output.json names it, ends in .html (the component renamed
    # the artifact's URI) and holds the page; nothing is left under the name KFP first gave.
    uri = run.uri("evaluate-2", "report")
    assert uri.endswith("/report.html") and not Path(uri[: -len(".html")]).exists()
    report = open(uri, encoding="utf-8").read()
    assert report.startswith("<!DOCTYPE html>") and "cached corpus vectors" in report and "passes" in report
    assert 'id="gained"' in report and "<svg" in report
