"""The embedding job's progress: the encoder counts the texts each worker process embedded, pass by pass."""

from __future__ import annotations

import functools
import logging

import torch

from embedpipe.embed import handler as handler_module
from embedpipe.embed.handler import Encoder, SentenceTransformerHandler
from embedpipe.embed.settings import ModelSettings
from embedpipe.embed.types import EmbedItem
from embedpipe.progress import Progress


class FakeModel:
    """No tokenizer: `encode_in_passes` gives it all texts of a call in one pass."""

    def encode(self, texts, **kwargs):
        return torch.ones((len(texts), 3))


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_each_forward_pass_counts_the_texts_this_worker_embedded_with_the_rate(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(handler_module, "_PROGRESS", {})
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, clock=clock, interval=10.0))
    handler = SentenceTransformerHandler(ModelSettings("default", batch_size=2))
    encoder = Encoder(FakeModel(), batch_size=2)
    batch = [EmbedItem(f"d{i}", f"text {i}", f"text {i}", "{}", "h") for i in range(4)]
    with caplog.at_level(logging.INFO, logger="embedpipe.progress"):
        for _ in range(3):
            clock.now += 2.0
            results = list(handler.run_inference(batch, encoder))
    assert len(results) == 4 and results[0].inference.shape == (3,)
    lines = [record.getMessage() for record in caplog.records]
    # The counter is made at 2 s by the first pass, which ends at once (no rate yet: no line); the second
    # at 4 s says the first line; the third, within the 10 s interval, is throttled.
    assert lines == [f"[progress] embedding (worker {handler_module.os.getpid()}): 8 texts, 4.0 texts/s"], lines
