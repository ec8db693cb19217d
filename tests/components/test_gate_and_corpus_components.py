import pytest
from kfp import dsl

from embedpipe.components import quality_gate_failed, select_corpus
from embedpipe.evaluate import QualityGateError
from embedpipe.images import BASE_IMAGE
from embedpipe.local import run_locally


def test_quality_gate_failure_says_by_how_much_and_what_to_do():
    with pytest.raises(
        QualityGateError, match=r"tuned ndcg@10 = 0\.6000 vs base 0\.6450 \(-0\.0450\).*index_with_base_model"
    ):
        quality_gate_failed.python_func(base_ndcg_at_10=0.645, tuned_ndcg_at_10=0.6, margin=0.0)


def test_select_corpus_points_at_the_given_corpus_or_the_prepared_one(tmp_path):
    other = tmp_path / "big.jsonl"
    other.write_text('{"_id": "1", "text": "x"}\n')
    prepared = dsl.Dataset(name="corpus", uri=str(tmp_path / "prepared"))
    out = dsl.Dataset(name="corpus", uri=str(tmp_path / "out"))
    select_corpus.python_func(prepared_corpus=prepared, corpus=out, index_corpus_path=str(other))
    assert out.uri == str(other)
    out = dsl.Dataset(name="corpus", uri=str(tmp_path / "out"))
    select_corpus.python_func(prepared_corpus=prepared, corpus=out)
    assert out.uri == prepared.uri
    with pytest.raises(FileNotFoundError, match="no_such.jsonl"):
        select_corpus.python_func(
            prepared_corpus=prepared, corpus=out, index_corpus_path=str(tmp_path / "no_such.jsonl")
        )


def test_a_redirected_artifact_reaches_the_next_task_under_kfp_local(tmp_path):
    other = tmp_path / "big.jsonl"
    other.write_text('{"_id": "1", "text": "x"}\n')

    @dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
    def make(out: dsl.Output[dsl.Dataset]):
        open(out.path, "w").write("prepared")

    @dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
    def read(data: dsl.Input[dsl.Dataset]) -> str:
        return open(data.path).read()

    @dsl.pipeline(name="redirect")
    def redirect(path: str):
        chosen = select_corpus(prepared_corpus=make().outputs["out"], index_corpus_path=path)
        read(data=chosen.outputs["corpus"])

    run = run_locally(redirect, {"path": str(other)}, pipeline_root=tmp_path / "runs")
    assert run.metadata("read", "Output")["value"] == '{"_id": "1", "text": "x"}\n'
