"""Pipeline tier: kfp.local runs and compiled YAML that kfp loads back."""

from kfp import compiler, components, dsl

import compile as compile_script
from embedpipe.components import prepare_data
from embedpipe.images import BASE_IMAGE
from embedpipe.local import run_locally


def test_pipeline_runs_locally_and_passes_artifacts_between_tasks(tmp_path, example_data):
    """A two-task pipeline: prepare_data's Dataset feeds a second (test-only) component."""

    @dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
    def count_rows(table: dsl.Input[dsl.Dataset]) -> int:
        import pandas as pd

        return len(pd.read_parquet(table.path))

    @dsl.pipeline(name="prepare-and-count")
    def prepare_and_count(corpus: str, queries: str, train: str, test: str):
        prepared = prepare_data(
            corpus_path=corpus, queries_path=queries, train_labels_path=train, test_labels_path=test
        )
        count_rows(table=prepared.outputs["corpus"])

    arguments = {
        "corpus": str(example_data / "corpus.jsonl"),
        "queries": str(example_data / "queries.jsonl"),
        "train": str(example_data / "qrels" / "train.tsv"),
        "test": str(example_data / "qrels" / "test.tsv"),
    }
    run = run_locally(prepare_and_count, arguments, pipeline_root=tmp_path / "runs")
    assert run.metadata("count-rows", "Output")["value"] == 400
    assert run.metadata("prepare-data", "metrics")["train_queries"] == 120


def test_compile_writes_yaml_that_kfp_loads_back(tmp_path):
    written = compile_script.compile_all(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"pipelines/tune_and_index.yaml", "components/prepare_data.yaml"} <= names
    for path in written:
        loaded = components.load_component_from_file(str(path))
        assert loaded.name
    # A compiled component is reusable in a fresh pipeline.
    reused = components.load_component_from_file(str(tmp_path / "components" / "prepare_data.yaml"))

    @dsl.pipeline(name="reuse")
    def reuse(corpus: str, queries: str, train: str):
        reused(corpus_path=corpus, queries_path=queries, train_labels_path=train)

    compiler.Compiler().compile(reuse, str(tmp_path / "reuse.yaml"))
    assert BASE_IMAGE in (tmp_path / "reuse.yaml").read_text()
