"""Reusing the vectors evaluate computed in the embedding job (`embedpipe.embed.reuse`), on the tiny example data.

Each test evaluates the 14-document corpus, turns the evaluation's vectors into previous vectors and runs
the real job (Beam's local runner): what is reused must be what the job would have computed, and what
cannot be (chunks, another model, another prompt, other texts under the same ids) must be embedded.
"""

import json
import logging
import shutil
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from embedpipe.embed.job import JobResult, prepare_config, run_job
from embedpipe.embed.reuse import REUSED_FILE, _same_model, vectors_from_evaluation
from embedpipe.embed.settings import ModelSettings
from embedpipe.evaluate import EvaluationOutputs, run_evaluation
from embedpipe.models import packaged_model_path
from embedpipe.prepare import SPLITS, prepare_data

pytestmark = pytest.mark.slow

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini" / "corpus.jsonl"
GEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    """The packaged MiniLM with noise added to its weights: another model of the same shape."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    folder = tmp_path_factory.mktemp("models") / "other"
    model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def gemma_style_model(tmp_path_factory) -> Path:
    """The packaged MiniLM with EmbeddingGemma's prompts: its document prompt depends on the task type."""
    folder = tmp_path_factory.mktemp("models") / "gemma-style"
    shutil.copytree(packaged_model_path(), folder)
    config_path = folder / "config_sentence_transformers.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "prompts": GEMMA_PROMPTS}))
    return folder


def evaluate(data: Path, out: Path, *, base_model: str = "default", tuned_model: str = "") -> Path:
    """prepare_data + evaluate on a BEIR folder; returns `out`, holding corpus.parquet and corpus_embeddings/."""
    prepared = prepare_data(
        corpus_path=str(data / "corpus.jsonl"),
        queries_path=str(data / "queries.jsonl"),
        train_labels_path=str(data / "qrels" / "train.tsv"),
        test_labels_path=str(data / "qrels" / "test.tsv"),
    )
    prepared.write(
        str(out / "corpus.parquet"), str(out / "queries.parquet"), {s: str(out / f"{s}.parquet") for s in SPLITS}
    )
    run_evaluation(
        str(out / "corpus.parquet"),
        str(out / "queries.parquet"),
        str(out / "test.parquet"),
        base_model=base_model,
        tuned_model=tuned_model,
        outputs=EvaluationOutputs(corpus_embeddings=str(out / "corpus_embeddings")),
    )
    return out


def embed(corpus: Path, out: Path, *, evaluation: Path | None = None, **options) -> tuple[int, pd.DataFrame, dict]:
    """Runs the job on `corpus`, with evaluation's vectors as previous vectors when given and reusable.

    Returns:
        (vectors written from evaluation, the job's vectors by id, the job's metrics).
    """
    model_options = {k: options.pop(k) for k in list(options) if k in {f.name for f in fields(ModelSettings)}}
    config = prepare_config(str(corpus), str(out / "vectors"), model=ModelSettings(**model_options), **options)
    written = 0
    if evaluation is not None:
        written = vectors_from_evaluation(str(evaluation), str(corpus), config, str(out / "previous"))
        if written:
            config = replace(config, previous_pattern=str(out / "previous" / REUSED_FILE))
    result = run_job(config)
    return written, pd.read_parquet(out / "vectors").set_index("id").sort_index(), result.metrics


def cosines(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    assert list(a.index) == list(b.index)
    return np.sum(np.stack(a["embedding"]) * np.stack(b["embedding"]), axis=1)


@pytest.mark.parametrize("output_dimensionality", [0, 128])
def test_every_evaluated_document_is_reused_and_equals_a_fresh_embedding(
    tmp_path, tiny_example_data, caplog, output_dimensionality
):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    corpus = out / "corpus.parquet"
    # evaluate used RETRIEVAL_QUERY, the job RETRIEVAL_DOCUMENT: the same document prompt, so reusable.
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, reused, metrics = embed(
            corpus,
            tmp_path / "reused",
            evaluation=out / "corpus_embeddings",
            output_dimensionality=output_dimensionality,
        )
    assert written == 14 and "reusing 14 vectors computed by evaluate (base model default" in caplog.text
    assert (
        metrics["documents_reused"],
        metrics["vectors_reused"],
        metrics["documents_embedded"],
        metrics["chunks_embedded"],
    ) == (14, 14, 0, 0)

    _, fresh, fresh_metrics = embed(corpus, tmp_path / "fresh", output_dimensionality=output_dimensionality)
    assert fresh_metrics["documents_embedded"] == 14
    assert len(reused["embedding"].iloc[0]) == (output_dimensionality or 384)
    assert cosines(reused, fresh).min() > 0.9999
    for column in ("content", "metadata", "content_hash"):
        assert list(reused[column]) == list(fresh[column])


def test_nothing_is_reused_when_the_job_chunks_documents(tmp_path, tiny_example_data, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, _, metrics = embed(
            out / "corpus.parquet",
            tmp_path / "chunked",
            evaluation=out / "corpus_embeddings",
            chunk_tokens=16,
            chunk_overlap=4,
        )
    assert written == 0 and not (tmp_path / "chunked" / "previous").exists()
    assert "splits documents into chunks" in caplog.text
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14


def test_nothing_is_reused_for_another_model(tmp_path, tiny_example_data, other_model, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval")  # the packaged MiniLM
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, _, metrics = embed(
            out / "corpus.parquet", tmp_path / "other", evaluation=out / "corpus_embeddings", model=str(other_model)
        )
    assert written == 0 and "evaluation embedded with model 'default'" in caplog.text
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14


def test_the_vectors_of_the_model_the_job_uses_are_picked(tmp_path, tiny_example_data, other_model):
    out = evaluate(tiny_example_data, tmp_path / "eval", tuned_model=str(other_model))  # base.* and tuned.*
    corpus, evaluation = out / "corpus.parquet", out / "corpus_embeddings"
    for name, model in (("tuned", str(other_model)), ("base", "default")):
        written, reused, metrics = embed(corpus, tmp_path / name, evaluation=evaluation, model=model)
        assert written == 14 and metrics["documents_reused"] == 14 and metrics["documents_embedded"] == 0
        _, fresh, _ = embed(corpus, tmp_path / f"{name}-fresh", model=model)
        assert cosines(reused, fresh).min() > 0.9999


def test_nothing_is_reused_with_another_document_prompt(tmp_path, tiny_example_data, gemma_style_model, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval", base_model=str(gemma_style_model))
    # CLUSTERING is symmetric: documents get the clustering prompt, not evaluation's "title: ... | text: ".
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, _, metrics = embed(
            out / "corpus.parquet",
            tmp_path / "clustering",
            evaluation=out / "corpus_embeddings",
            model=str(gemma_style_model),
            task_type="CLUSTERING",
        )
    assert written == 0 and "document prompt is 'title: none | text: '" in caplog.text
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14
    # The same model and prompt as evaluation: reused, prompt included in the hash.
    written, _, metrics = embed(
        out / "corpus.parquet",
        tmp_path / "retrieval",
        evaluation=out / "corpus_embeddings",
        model=str(gemma_style_model),
    )
    assert written == 14 and metrics["documents_reused"] == 14


def write_corpus_with_shifted_texts(out: Path, target: Path) -> Path:
    """Evaluation's corpus with each text moved to the next id: another corpus that happens to use the same ids."""
    corpus = pd.read_parquet(out / "corpus.parquet")
    corpus["text"] = np.roll(corpus["text"].to_numpy(), 1)
    corpus.to_parquet(target)
    return target


def test_ids_that_name_other_documents_are_embedded_not_reused(tmp_path, tiny_example_data, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    write_corpus_with_shifted_texts(out, tmp_path / "other-corpus.parquet")
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, _, metrics = embed(
            tmp_path / "other-corpus.parquet", tmp_path / "other", evaluation=out / "corpus_embeddings"
        )
    assert written == 0 and "14 documents have other texts than evaluation embedded" in caplog.text
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14


def test_vectors_saved_without_text_hashes_are_checked_by_embedding_a_few_again(tmp_path, tiny_example_data, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    saved = out / "corpus_embeddings" / "base.parquet"
    pd.read_parquet(saved).drop(columns=["text_hash"]).to_parquet(saved)  # as an older evaluate wrote them
    write_corpus_with_shifted_texts(out, tmp_path / "other-corpus.parquet")
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, _, metrics = embed(
            tmp_path / "other-corpus.parquet", tmp_path / "other", evaluation=out / "corpus_embeddings"
        )
    assert written == 0 and "evaluation embedded another text under this id" in caplog.text
    assert metrics["documents_reused"] == 0 and metrics["documents_embedded"] == 14


def test_documents_edited_since_evaluation_are_embedded_the_rest_reused(tmp_path, tiny_example_data, caplog):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    corpus = pd.read_parquet(out / "corpus.parquet")
    edited = corpus["_id"].iloc[[3, 9]].tolist()
    corpus.loc[corpus["_id"].isin(edited), "text"] += " (revised)"  # a small edit the spot check would miss
    corpus.to_parquet(tmp_path / "edited.parquet")
    with caplog.at_level(logging.INFO, logger="embedpipe.embed.reuse"):
        written, reused, metrics = embed(
            tmp_path / "edited.parquet", tmp_path / "reused", evaluation=out / "corpus_embeddings"
        )
    assert written == 12 and "2 documents have other texts than evaluation embedded" in caplog.text
    assert (metrics["documents_reused"], metrics["documents_embedded"]) == (12, 2)
    _, fresh, _ = embed(tmp_path / "edited.parquet", tmp_path / "fresh")
    assert cosines(reused, fresh).min() > 0.9999  # the edited ones included: their vectors are of the new text


def test_a_larger_corpus_reuses_the_overlap_and_embeds_the_rest(tmp_path, tiny_example_data):
    out = evaluate(tiny_example_data, tmp_path / "eval")
    evaluated = pd.read_parquet(out / "corpus.parquet")
    rows = [json.loads(line) for line in MINI.read_text().splitlines()]
    extra = pd.DataFrame([r for r in rows if r["_id"] not in set(evaluated["_id"])][:6])[["_id", "title", "text"]]
    extra["metadata"] = "{}"
    larger = tmp_path / "larger"  # a folder of two Parquet shards, the evaluated documents in the second
    larger.mkdir()
    extra.to_parquet(larger / "part-0.parquet")
    evaluated.to_parquet(larger / "part-1.parquet")
    written, reused, metrics = embed(larger, tmp_path / "reused", evaluation=out / "corpus_embeddings")
    assert written == 14 and len(reused) == 20
    assert (metrics["documents_reused"], metrics["documents_embedded"], metrics["documents_removed"]) == (14, 6, 0)
    _, fresh, _ = embed(larger, tmp_path / "fresh")
    assert cosines(reused, fresh).min() > 0.9999


def test_same_model_means_the_same_reference_or_the_same_files(tmp_path, other_model):
    copy = tmp_path / "copy-of-default"
    shutil.copytree(packaged_model_path(), copy)
    assert _same_model("default", "default") and _same_model("default", str(packaged_model_path()))
    assert _same_model(str(copy), "all-MiniLM-L6-v2")
    assert not _same_model("default", str(other_model))
    assert not _same_model("default", str(tmp_path / "no-such-model"))


def artifact(uri: str, path: Path):
    return SimpleNamespace(uri=uri, path=str(path), metadata={})


def test_the_task_prefers_previous_vectors_and_hands_dataflow_the_gs_uri(tmp_path, tiny_example_data, monkeypatch):
    from embedpipe.embed import job, task

    out = evaluate(tiny_example_data, tmp_path / "eval")
    configs = []
    monkeypatch.setattr(
        job, "run_job", lambda config, *a, **kw: configs.append(config) or JobResult("DONE", {}, "", config.output)
    )
    common = dict(
        corpus=artifact("gs://b/run/corpus", out / "corpus.parquet"),
        metrics=SimpleNamespace(log_metric=lambda *a: None),
        gcp_resources=str(tmp_path / "gcp_resources"),
        evaluation_embeddings=artifact("gs://b/run/emb", out / "corpus_embeddings"),
        task_type="RETRIEVAL_QUERY",
    )
    real_resolve = job.resolve_input
    # No Google Cloud here: gs:// URIs resolve to themselves; the launcher reads the /gcs/ paths (here tmp_path).
    monkeypatch.setattr(
        job,
        "resolve_input",
        lambda path, **kw: (path, "parquet") if path.startswith("gs://") else real_resolve(path, **kw),
    )

    task.embed_corpus_task(
        **common, vectors=artifact("gs://b/run/vectors", tmp_path / "vectors"), runner="DataflowRunner", project="p"
    )
    assert configs[-1].previous_pattern == f"gs://b/run/vectors-from-evaluation/{REUSED_FILE}"
    assert len(pd.read_parquet(tmp_path / "vectors-from-evaluation" / REUSED_FILE)) == 14

    task.embed_corpus_task(
        **common,
        vectors=artifact("gs://b/run/vectors2", tmp_path / "vectors2"),
        runner="DataflowRunner",
        project="p",
        previous_vectors=artifact("gs://b/old/vectors", tmp_path / "old"),
    )
    assert configs[-1].previous_pattern == "gs://b/old/vectors"
    assert not (tmp_path / "vectors2-from-evaluation").exists()
