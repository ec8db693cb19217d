"""Component tier: embed_corpus's Python function (local runner, and DataflowRunner faked), and a kfp.local run.

Dataflow itself cannot be reached from here: `FakeDataflowRunner` stands in for Beam's DataflowRunner. It
receives the real pipeline and the real pipeline options, and answers like a Dataflow job (an id, states,
counters) without running anything.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from google.protobuf import json_format
from kfp import dsl

from embedpipe.components import EmbedCorpusOp, embed_corpus
from embedpipe.images import BASE_IMAGE, DATAFLOW_IMAGE
from embedpipe.models import packaged_model_path

pytestmark = pytest.mark.slow

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini" / "corpus.jsonl"


def write_corpus(path: Path, n: int) -> Path:
    rows = [json.loads(line) for line in MINI.read_text().splitlines()[:n]]
    pd.DataFrame(
        {
            "_id": [r["_id"] for r in rows],
            "title": [r["title"] for r in rows],
            "text": [r["text"] for r in rows],
            "metadata": ["{}"] * n,
        }
    ).to_parquet(path)
    return path


def artifact(cls, path_or_uri):
    """An artifact as KFP hands it over (a gs:// URI gets the /gcs/... path Vertex mounts)."""
    return cls(name=Path(str(path_or_uri)).name, uri=str(path_or_uri))


def test_component_runs_the_job_locally_and_logs_metrics(tmp_path):
    corpus = artifact(dsl.Dataset, write_corpus(tmp_path / "corpus", 6))
    vectors, metrics = artifact(dsl.Dataset, tmp_path / "vectors"), artifact(dsl.Metrics, tmp_path / "metrics")
    embed_corpus.python_func(
        corpus=corpus,
        vectors=vectors,
        metrics=metrics,
        gcp_resources=str(tmp_path / "gcp_resources"),
        tuned_model=artifact(dsl.Model, packaged_model_path()),
        chunk_tokens=128,
        chunk_overlap=32,
    )
    table = pd.read_parquet(vectors.path)
    assert set(table.columns) >= {"id", "embedding", "content", "metadata", "content_hash"}
    assert metrics.metadata["documents_embedded"] == 6 and metrics.metadata["chunks_embedded"] == len(table) > 6
    assert metrics.metadata["dead_letters"] == 0 and metrics.metadata["documents_per_second"] > 0
    assert json.loads((tmp_path / "gcp_resources").read_text()) == {"resources": []}
    assert vectors.metadata["model"] == str(packaged_model_path())


class FakeDataflowResult(PipelineResult):
    def __init__(self, final_state, events):
        super().__init__(PipelineState.RUNNING)
        self._final_state, self._events = final_state, events

    def job_id(self):
        return "2026-11-23_01_02_03-42"

    def wait_until_finish(self, duration=None):
        self._events.append("wait")
        self._state = self._final_state
        return self._state

    def cancel(self):
        self._state = PipelineState.CANCELLED

    def metrics(self):
        counters = [
            SimpleNamespace(key=SimpleNamespace(metric=SimpleNamespace(name=n)), committed=v, attempted=v)
            for n, v in {"documents_read": 5, "documents_embedded": 5, "chunks_embedded": 5}.items()
        ]
        return SimpleNamespace(query=lambda _filter: {"counters": counters})


class FakeDataflowRunner(PipelineRunner):
    """Takes the place of DataflowRunner: records the pipeline and its options, runs nothing."""

    def __init__(self, final_state=PipelineState.DONE):
        self.final_state, self.events, self.options, self.labels = final_state, [], None, []

    def run_pipeline(self, pipeline, options):
        self.options = options
        runner = self

        class Labels(PipelineVisitor):
            def enter_composite_transform(self, node):
                runner.labels.append(node.full_label)

        pipeline.visit(Labels())
        self.events.append("submitted")
        return FakeDataflowResult(self.final_state, self.events)


def dataflow_inputs(tmp_path):
    # Vertex hands artifacts over with gs:// URIs; the workers get those, the launcher reads /gcs/ paths.
    return dict(
        corpus=artifact(dsl.Dataset, "gs://bucket/run/prepare-data/corpus"),
        vectors=artifact(dsl.Dataset, "gs://bucket/run/embed-corpus/vectors"),
        metrics=artifact(dsl.Metrics, tmp_path / "metrics"),
        gcp_resources=str(tmp_path / "gcp_resources"),
    )


def test_dataflow_launch_builds_the_options_writes_gcp_resources_and_waits(tmp_path, monkeypatch):
    from embedpipe.embed import job, task

    seen_paths = []
    monkeypatch.setattr(job, "resolve_input", lambda path, **kw: (seen_paths.append(path) or path, "parquet"))
    fake = FakeDataflowRunner()
    written_before_wait = []
    real_write = Path.write_text

    def spy(self, text, *args, **kwargs):
        if self.name == "gcp_resources":
            written_before_wait.append(fake.events.copy())
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", spy)
    inputs = dataflow_inputs(tmp_path)
    task.embed_corpus_task(
        **inputs,
        runner="DataflowRunner",
        project="my-project",
        location="europe-west4",
        machine_type="g2-standard-8",
        max_workers=8,
        accelerator_type="nvidia-l4",
        accelerator_count=1,
        service_account="sa@my-project.iam.gserviceaccount.com",
        network="vpc",
        dataflow_image=DATAFLOW_IMAGE,
        beam_runner=fake,
    )
    assert seen_paths == ["gs://bucket/run/prepare-data/corpus"]  # workers read the gs:// URI, not /gcs/
    options = fake.options
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.temp_location) == (
        "my-project",
        "europe-west4",
        "gs://bucket/run/embed-corpus/vectors-dataflow-tmp",
    )
    assert cloud.service_account_email == "sa@my-project.iam.gserviceaccount.com"
    assert cloud.dataflow_service_options == ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.max_num_workers, workers.network) == ("g2-standard-8", 8, "vpc")
    assert workers.sdk_container_image == DATAFLOW_IMAGE
    assert any(label.endswith("Embed") for label in fake.labels) and "WriteVectors" in fake.labels

    from google_cloud_pipeline_components.proto import gcp_resources_pb2

    resources = json_format.Parse((tmp_path / "gcp_resources").read_text(), gcp_resources_pb2.GcpResources())
    assert resources.resources[0].resource_type == "DataflowJob"
    assert resources.resources[0].resource_uri.endswith(
        "/projects/my-project/locations/europe-west4/jobs/2026-11-23_01_02_03-42"
    )
    assert written_before_wait == [["submitted"]]  # linked in the UI while the job runs, not after
    assert inputs["metrics"].metadata["documents_embedded"] == 5


def test_the_kms_key_is_the_dataflow_job_s_cmek_key(tmp_path, monkeypatch):
    from embedpipe.embed import job, task

    monkeypatch.setattr(job, "resolve_input", lambda path, **kw: (path, "parquet"))
    fake = FakeDataflowRunner()
    key = "projects/my-project/locations/europe-west4/keyRings/ring/cryptoKeys/key"
    task.embed_corpus_task(
        **dataflow_inputs(tmp_path), runner="DataflowRunner", project="my-project", kms_key=key, beam_runner=fake
    )
    assert fake.options.view_as(GoogleCloudOptions).dataflow_kms_key == key


def test_a_failed_dataflow_job_fails_the_task(tmp_path, monkeypatch):
    from embedpipe.embed import job, task

    monkeypatch.setattr(job, "resolve_input", lambda path, **kw: (path, "parquet"))
    with pytest.raises(RuntimeError, match="ended in state FAILED"):
        task.embed_corpus_task(
            **dataflow_inputs(tmp_path),
            runner="DataflowRunner",
            project="p",
            beam_runner=FakeDataflowRunner(PipelineState.FAILED),
        )
    assert "DataflowJob" in (tmp_path / "gcp_resources").read_text()


def test_unknown_runner_is_refused(tmp_path):
    from embedpipe.embed import task

    with pytest.raises(ValueError, match="runner must be one of"):
        task.embed_corpus_task(**dataflow_inputs(tmp_path), runner="SparkRunner")


def test_component_is_lightweight_on_our_image():
    executor = next(iter(embed_corpus.pipeline_spec.deployment_spec["executors"].values()))
    assert executor["container"]["image"] == BASE_IMAGE
    assert "pip install" not in " ".join(executor["container"]["command"])
    assert EmbedCorpusOp is embed_corpus
    inputs = embed_corpus.component_spec.inputs
    assert inputs["tuned_model"].optional and inputs["previous_vectors"].optional


def test_kfp_local_pipeline_passes_a_model_artifact_and_previous_vectors(tmp_path):
    from embedpipe.local import run_locally

    @dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
    def small_corpus(source: str, n: int, corpus: dsl.Output[dsl.Dataset]):
        import pandas as pd

        pd.read_json(source, lines=True, dtype={"_id": str}).head(n).to_parquet(corpus.path)

    @dsl.pipeline(name="embed-twice")
    def embed_twice(source: str, model_uri: str):
        corpus = small_corpus(source=source, n=4)
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model, reimport=False)
        first = embed_corpus(corpus=corpus.outputs["corpus"], tuned_model=model.output)
        embed_corpus(
            corpus=corpus.outputs["corpus"], tuned_model=model.output, previous_vectors=first.outputs["vectors"]
        )

    # A copy of the model: kfp.local rewrites "python3" inside paths on its command line, and the packaged
    # model lives under .venv/lib/python3.11/.
    model_copy = tmp_path / "tuned-model"
    shutil.copytree(packaged_model_path(), model_copy)
    run = run_locally(
        embed_twice, {"source": str(MINI), "model_uri": str(model_copy)}, pipeline_root=tmp_path / "runs"
    )
    assert run.metadata("embed-corpus", "metrics")["documents_embedded"] == 4
    assert run.metadata("embed-corpus-2", "metrics")["documents_reused"] == 4
    assert run.metadata("embed-corpus-2", "metrics")["documents_embedded"] == 0
