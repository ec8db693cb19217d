"""The embedding job's progress: RunInference's handler counts the texts each worker process embedded."""

from __future__ import annotations

import functools
import logging

import numpy as np

from embedpipe.embed import handler as handler_module
from embedpipe.embed.handler import SentenceTransformerHandler
from embedpipe.embed.settings import ModelSettings
from embedpipe.embed.types import EmbedItem
from embedpipe.progress import Progress


class FakeEncoder:
    def embed(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_run_inference_logs_the_texts_this_worker_embedded_with_the_rate(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(handler_module, "_PROGRESS", {})
    monkeypatch.setattr(handler_module, "Progress", functools.partial(Progress, clock=clock, interval=10.0))
    handler = SentenceTransformerHandler(ModelSettings("default", batch_size=2))
    batch = [EmbedItem(f"d{i}", f"text {i}", f"text {i}", "{}", "h") for i in range(4)]
    with caplog.at_level(logging.INFO, logger="embedpipe.progress"):
        for _ in range(3):
            clock.now += 2.0
            results = list(handler.run_inference(batch, FakeEncoder()))
    assert len(results) == 4
    lines = [record.getMessage() for record in caplog.records]
    # first batch made the counter at 2 s and finished at once (no rate yet: no line); the second at 4 s
    # (2 s later: the first line), the third within the 10 s interval (throttled)
    assert lines == [f"[progress] embedding (worker {handler_module.os.getpid()}): 8 texts, 4.0 texts/s"], lines
