"""Forward passes grouped by token count (`plan_batches`, `Encoder.tokens_per_batch`)."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from embedpipe.embed.handler import Encoder
from embedpipe.models import CPU_TOKENS_PER_BATCH, encode_in_chunks, plan_batches

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini" / "corpus.jsonl"


@pytest.mark.parametrize("seed", range(5))
def test_every_text_once_and_within_both_limits(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 200))]
    batches = plan_batches(lengths, batch_size=16, tokens_per_batch=1000)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 16
        assert longest * len(batch) <= 1000 or len(batch) == 1
    # longest first: each pass's texts are no longer than the previous pass's shortest
    for before, after in zip(batches, batches[1:]):
        assert min(lengths[i] for i in before) >= max(lengths[i] for i in after)


def test_long_texts_get_small_passes_and_short_texts_fill_up_to_batch_size():
    lengths = [256] * 20 + [16] * 100
    batches = plan_batches(lengths, batch_size=32, tokens_per_batch=2048)
    # 2,048 / 256 = 8 texts per pass while a long text leads it (the third: 4 long, 4 short); then the
    # short ones fill passes up to batch_size
    assert [len(b) for b in batches] == [8, 8, 8, 32, 32, 32]
    assert plan_batches([300, 5], batch_size=8, tokens_per_batch=100) == [[0], [1]]  # over budget: alone


def test_no_token_limit_is_plain_batch_size():
    assert [len(b) for b in plan_batches([10] * 70, batch_size=32, tokens_per_batch=0)] == [32, 32, 6]


class CountingModel:
    """Wraps the packaged model and records the texts of each forward pass."""

    def __init__(self, model):
        self.inner, self.passes = model, []
        self.tokenizer, self.max_seq_length, self.device = model.tokenizer, model.max_seq_length, model.device

    def get_embedding_dimension(self):
        return self.inner.get_embedding_dimension()

    def encode(self, texts, batch_size, **kwargs):
        self.passes.append(len(texts) if len(texts) <= batch_size else batch_size)
        return self.inner.encode(texts, batch_size=batch_size, **kwargs)


@pytest.mark.slow
def test_encoder_with_a_token_budget_equals_encode_and_keeps_input_order():
    from embedpipe.models import load_model

    model = load_model("default", device="cpu")
    rows = [json.loads(line) for line in MINI.read_text().splitlines()[:24]]
    texts = [f"{r['title']} {r['text']}" for r in rows] + ["short one", "pgvector", "a b c"]
    counting = CountingModel(model)
    encoder = Encoder(counting, batch_size=32, tokens_per_batch=1024)
    got = encoder.embed(texts)
    expected = model.encode(texts, prompt="", normalize_embeddings=True, batch_size=32)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert (got * expected).sum(axis=1).min() > 0.9999  # same texts, same rows, whatever the passes
    assert len(counting.passes) > 1 and max(counting.passes) < 32  # long abstracts: a few per pass
    assert Encoder(counting, batch_size=32).tokens_per_batch == CPU_TOKENS_PER_BATCH  # auto on CPU
    assert Encoder(counting, batch_size=32, tokens_per_batch=-1).tokens_per_batch == 0


@pytest.mark.slow
def test_evaluation_encoding_uses_the_same_passes_and_equals_encode():
    from embedpipe.models import load_model

    model = load_model("default", device="cpu")
    rows = [json.loads(line) for line in MINI.read_text().splitlines()[:24]]
    texts = ["pgvector"] + [f"{r['title']} {r['text']}" for r in rows] + ["short one"]
    counting = CountingModel(model)
    got = encode_in_chunks(counting, texts, batch_size=32, chunk=10, tokens_per_batch=1024)
    expected = model.encode(texts, prompt="", normalize_embeddings=True, batch_size=32)
    assert (got * expected).sum(axis=1).min() > 0.9999
    assert len(counting.passes) > 3 and max(counting.passes) < 10  # chunks of 10, cut again by tokens


def test_a_model_can_choose_its_own_automatic_limit():
    from types import SimpleNamespace

    from embedpipe.backend import Int8Model
    from embedpipe.models import resolve_tokens_per_batch

    cpu, gpu = (
        SimpleNamespace(device=SimpleNamespace(type="cpu")),
        SimpleNamespace(device=SimpleNamespace(type="cuda")),
    )
    assert (resolve_tokens_per_batch(cpu), resolve_tokens_per_batch(gpu)) == (CPU_TOKENS_PER_BATCH, 0)
    assert resolve_tokens_per_batch(cpu, -1) == 0 and resolve_tokens_per_batch(gpu, 512) == 512
    assert Int8Model.auto_tokens_per_batch == -1  # int8 on ONNX Runtime: batch_size texts per pass
    int8_like = SimpleNamespace(device=SimpleNamespace(type="cpu"), auto_tokens_per_batch=-1)
    assert resolve_tokens_per_batch(int8_like) == 0 and resolve_tokens_per_batch(int8_like, 1024) == 1024
