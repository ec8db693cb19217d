"""Library tier: the int8 CPU backend (`embedpipe.backend`) against sentence-transformers' fp32 vectors.

Threshold: a mean cosine to the fp32 vectors of at least 0.985 over 50 SciFact texts. Measured with this
method: 0.996 on 400 SciFact documents and queries (0.991 at worst), SciFact NDCG@10 within 0.01 of fp32
(benchmarks/README.md). The naive methods land well below: one int8 scale per tensor gives 0.94 in ONNX
Runtime, and torch's own dynamic quantization of every Linear 0.915 (the last test here shows it fails).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedpipe.backend import ONNX_FILE, UnsupportedModelError, load_int8_model, prepare_int8_model
from embedpipe.embed.handler import load_encoder
from embedpipe.embed.job import prepare_config, run_job
from embedpipe.embed.settings import ModelSettings
from embedpipe.models import load_model, model_identity, packaged_model_path

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini"
MEAN_COSINE = 0.985
WORST_COSINE = 0.96


@pytest.fixture(scope="module", autouse=True)
def int8_cache(tmp_path_factory):
    """One prepared-model cache for the module: the export and quantization run once."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("int8-cache")
        patch.setenv("EMBEDPIPE_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="module")
def fp32():
    return load_model("default", device="cpu")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = [json.loads(line) for line in (EXAMPLES / "corpus.jsonl").read_text().splitlines()[:40]]
    queries = [json.loads(line)["text"] for line in (EXAMPLES / "queries.jsonl").read_text().splitlines()[:10]]
    return [f"{d['title']} {d['text']}" for d in docs] + queries


def cosines(got, expected):
    return (np.asarray(got) * np.asarray(expected)).sum(axis=1)


def fp32_vectors(model, texts):
    return model.encode(texts, batch_size=32, prompt="", normalize_embeddings=True)


def test_int8_vectors_are_close_to_fp32_sentence_transformers(fp32, texts, int8_cache):
    encoder = load_encoder("default", backend="onnx-int8", batch_size=16)
    got = encoder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (50, 384) and encoder.dimension == 384
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    similarity = cosines(got, fp32_vectors(fp32, texts))
    assert similarity.mean() >= MEAN_COSINE and similarity.min() >= WORST_COSINE, (similarity.mean(), similarity.min())
    # The prepared model is cached by fingerprint and says how it was made.
    (folder,) = [p for p in (int8_cache / "onnx-int8").iterdir() if not p.name.startswith(".")]
    prepared = json.loads((folder / "prepared.json").read_text())
    assert (folder / ONNX_FILE).is_file() and prepared["fused"] and prepared["mean_cosine_to_fp32"] > 0.98
    assert prepared["export_relative_difference"] < 1e-4


def test_a_text_alone_or_in_a_padded_batch_gets_about_the_same_vector(texts, fp32):
    model = load_int8_model("default")
    alone = np.stack([model.encode([t], normalize_embeddings=True)[0] for t in texts[-5:]])
    batched = model.encode(texts, batch_size=50, normalize_embeddings=True)[-5:]
    # Activations are quantized per batch (one scale for the batch's whole tensor), so the texts a text
    # is batched with move its vector a little (measured: cosine 0.989 at worst here), never much.
    assert cosines(alone, batched).min() > 0.98
    assert cosines(alone, fp32_vectors(fp32, texts[-5:])).min() > WORST_COSINE
    assert model.encode("one text").shape == (384,)


def test_the_job_with_the_int8_backend_writes_one_vector_per_document_and_never_mixes_backends(
    tmp_path, tiny_example_data, fp32
):
    corpus = tiny_example_data / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    torch_run = run_job(prepare_config(str(corpus), str(tmp_path / "torch")))
    int8_run = run_job(
        prepare_config(
            str(corpus),
            str(tmp_path / "int8"),
            model=ModelSettings(backend="onnx-int8"),
            previous=str(tmp_path / "torch"),
        )
    )
    assert (int8_run.metrics["documents_embedded"], int8_run.metrics["documents_reused"]) == (
        14,
        0,
    )  # torch vectors not reused
    vectors = pd.read_parquet(tmp_path / "int8").set_index("id")
    assert sorted(vectors.index) == sorted(d["_id"] for d in docs) and len(vectors) == 14
    got = np.stack(vectors.loc[[d["_id"] for d in docs], "embedding"].to_list())
    assert got.dtype == np.float32 and got.shape == (14, 384)
    assert cosines(got, fp32_vectors(fp32, [f"{d['title']} {d['text']}" for d in docs])).min() > WORST_COSINE
    torch_hashes = pd.read_parquet(tmp_path / "torch").set_index("id")["content_hash"]
    assert not set(torch_hashes) & set(vectors["content_hash"])
    again = run_job(
        prepare_config(
            str(corpus),
            str(tmp_path / "int8-again"),
            model=ModelSettings(backend="onnx-int8"),
            previous=str(tmp_path / "int8"),
        )
    )
    assert (again.metrics["documents_embedded"], again.metrics["documents_reused"]) == (0, 14)
    assert torch_run.metrics["documents_embedded"] == 14


def test_the_model_identity_names_the_backend():
    assert model_identity("default") != model_identity("default", backend="onnx-int8")
    assert model_identity("default", backend="onnx-int8").endswith("|backend=onnx-int8|dim=full")


def with_modules(tmp_path: Path, modules: list[dict]) -> Path:
    """The packaged MiniLM folder (weights linked, not copied) with another modules.json."""
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for item in packaged_model_path().iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "modules.json").unlink()
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def test_a_module_the_backend_does_not_run_is_refused_before_the_job_starts(tmp_path, tiny_example_data):
    transformer = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    pooling = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    lstm = {"idx": 2, "name": "2", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"}
    model = with_modules(tmp_path, [transformer, pooling, lstm])
    corpus = str(tiny_example_data / "corpus.jsonl")
    with pytest.raises(
        UnsupportedModelError, match=r"module 2 in modules.json is LSTM; the onnx-int8 backend runs a Transformer"
    ):
        prepare_config(corpus, str(tmp_path / "out"), model=ModelSettings(str(model), backend="onnx-int8"))
    assert not (tmp_path / "out").exists()
    static = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.StaticEmbedding"}
    with pytest.raises(UnsupportedModelError, match="module 0 in modules.json is StaticEmbedding"):
        prepare_config(
            corpus,
            str(tmp_path / "out"),
            model=ModelSettings(str(with_modules(tmp_path / "b", [static])), backend="onnx-int8"),
        )
    with pytest.raises(ValueError, match="backend 'onnx-int8' is for CPU workers"):
        prepare_config(corpus, str(tmp_path / "out"), model=ModelSettings(backend="onnx-int8", device="cuda"))


def test_a_loaded_model_with_an_unsupported_module_is_refused_with_the_module_named(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    model = load_model("default", device="cpu")
    extended = SentenceTransformer(modules=[*model, LayerNorm(384)], device="cpu")
    extended.save(str(tmp_path / "with-layernorm"))
    with pytest.raises(UnsupportedModelError, match="module 3 is LayerNorm; the onnx-int8 backend runs a Transformer"):
        prepare_int8_model(str(tmp_path / "with-layernorm"), extended, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*/" + ONNX_FILE))


def test_an_embeddinggemma_like_model_runs_in_int8(tmp_path):
    """Gemma 3 with bidirectional and sliding-window attention, then mean Pooling, two Dense layers and
    Normalize, as EmbeddingGemma is built (tiny and random here: no model hub in tests)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path()))
    config = Gemma3TextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=8,
        use_bidirectional_attention=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    Gemma3TextModel(config).save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    st = SentenceTransformer(
        modules=[
            Transformer(str(tmp_path / "hf")),
            Pooling(64, "mean"),
            Dense(64, 128, activation_function=None),
            Dense(128, 64, activation_function=None),
            Normalize(),
        ],
        device="cpu",
    )
    st.save(str(tmp_path / "gemma-like"))
    texts = [
        "a text longer than the sliding window of eight tokens, so the window matters",
        "short",
        "title: none | text: x",
    ]
    expected = SentenceTransformer(str(tmp_path / "gemma-like"), device="cpu").encode(
        texts, prompt="", normalize_embeddings=True
    )
    got = load_int8_model(str(tmp_path / "gemma-like"), cache_dir=tmp_path / "cache").encode(
        texts, normalize_embeddings=True
    )
    assert got.shape == (3, 64) and cosines(got, expected).min() > 0.99


def test_torch_s_naive_dynamic_quantization_would_fail_the_threshold(fp32, texts):
    import torch

    quantize = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantize is None or not hasattr(quantize, "quantize_dynamic"):
        pytest.skip("this torch has no torch.ao.quantization.quantize_dynamic")
    naive = quantize.quantize_dynamic(load_model("default", device="cpu"), {torch.nn.Linear}, dtype=torch.qint8)
    assert cosines(fp32_vectors(naive, texts), fp32_vectors(fp32, texts)).mean() < MEAN_COSINE
