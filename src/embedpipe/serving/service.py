"""The model side of the endpoint: one loaded model, its prompts, and micro-batching of concurrent requests.

`EmbeddingService.predict` takes a request body and returns the gecko-shaped answer; `MicroBatcher` lets the
texts of concurrent requests be encoded together, in one thread.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from embedpipe.prompts import Prompts, resolve_prompts
from embedpipe.serving.request import PredictError, PredictRequest, parse_request


class MicroBatcher:
    """Encodes the texts of concurrent requests together, in one background thread.

    Requests that arrive while a batch is being encoded wait and are encoded as the next batch (up to
    `max_texts` texts), so under load the model sees batches instead of one text at a time, and torch
    never runs two encodes at once on the same cores. Token counting runs here too: a Hugging Face fast
    tokenizer must not be called from two threads at once ("Already borrowed").

    `encode_fn(texts)` returns (vectors, token_counts); `encode(texts)` returns the same for one request.
    """

    def __init__(self, encode_fn, max_texts: int = 64):
        self.encode_fn = encode_fn
        self.max_texts = max_texts
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="embedpipe-batcher", daemon=True).start()

    def encode(self, texts: list[str]):
        slot: dict = {"done": threading.Event()}
        self.pending.put((texts, slot))
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _run(self) -> None:
        while True:
            batch = [self.pending.get()]
            count = len(batch[0][0])
            while count < self.max_texts:
                try:
                    item = self.pending.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                count += len(item[0])
            try:
                vectors, counts = self.encode_fn([text for texts, _ in batch for text in texts])
            except Exception as err:  # every waiting request gets the error
                for _, slot in batch:
                    slot["error"] = err
                    slot["done"].set()
                continue
            start = 0
            for texts, slot in batch:
                slot["result"] = (vectors[start : start + len(texts)], counts[start : start + len(texts)])
                start += len(texts)
                slot["done"].set()


@dataclass
class EmbeddingService:
    """Turns gecko-style request bodies into gecko-style responses with one loaded model.

    Example:
        >>> from embedpipe.models import load_model                          # doctest: +SKIP
        >>> service = EmbeddingService(load_model("default"))                # doctest: +SKIP
        >>> service.predict({"instances": [{"content": "hi"}]})["predictions"][0]["embeddings"]["statistics"]  # doctest: +SKIP
        {'token_count': 3, 'truncated': False}
    """

    model: object
    batch_size: int = 32
    _prompts: dict[str, Prompts] = field(default_factory=dict)
    _batcher: MicroBatcher | None = None

    def __post_init__(self):
        from embedpipe.models import encode

        self._batcher = MicroBatcher(
            lambda texts: (encode(self.model, texts, batch_size=self.batch_size), self.token_counts(texts))
        )

    @property
    def dimension(self) -> int:
        from embedpipe.models import embedding_dimension

        return embedding_dimension(self.model)

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def prompts(self, task_type: str) -> Prompts:
        if task_type not in self._prompts:
            self._prompts[task_type] = resolve_prompts(task_type, self.model.prompts)
        return self._prompts[task_type]

    def parse(self, body) -> PredictRequest:
        """Checks a request body and formats its texts with their task types' prompts (see `parse_request`)."""
        return parse_request(body, dimension=self.dimension, prompts=self.prompts)

    def token_counts(self, texts: list[str]) -> list[int]:
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def predict(self, body) -> dict:
        """Answers one request body.

        Raises:
            PredictError: for a request that must be answered 400.
        """
        import numpy as np

        request = self.parse(body)
        vectors, counts = self._batcher.encode(request.texts)
        limit = self.max_seq_length
        if not request.auto_truncate:
            too_long = [i for i, n in enumerate(counts) if n > limit]
            if too_long:
                first = too_long[0]
                others = f"; so are instances{too_long[1:10]}" if len(too_long) > 1 else ""
                raise PredictError(
                    f"instances[{first}].content is {counts[first]} tokens with its prompt, more than the model's "
                    f"{limit}, and parameters.autoTruncate is false{others}: shorten it or allow truncation"
                )
        dimension = request.output_dimensionality
        if dimension is not None and dimension < vectors.shape[1]:
            vectors = vectors[:, :dimension]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return {
            "predictions": [
                {"embeddings": {"values": vector.tolist(), "statistics": {"token_count": n, "truncated": n > limit}}}
                for vector, n in zip(vectors, counts)
            ],
            "metadata": {"billableCharacterCount": request.billable_characters},
        }
