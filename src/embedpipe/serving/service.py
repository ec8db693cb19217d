"""The model side of the endpoint: one loaded model, its prompts, and micro-batching of concurrent requests.

`EmbeddingService.predict` takes a request body and returns the gecko-shaped answer. The request's own
thread checks the body, counts its tokens and cuts each text to what the model reads of it; only that goes
to the `MicroBatcher`, so a long text costs its own request the tokenizing, not every client waiting behind
it (benchmarks/README.md, serving_load).
"""

from __future__ import annotations

import copy
import queue
import time
from dataclasses import dataclass, field

from embedpipe.prompts import Prompts, resolve_prompts
from embedpipe.serving.batcher import DeadlineExceeded, ItemFailed, MicroBatcher
from embedpipe.serving.limits import ServingLimits
from embedpipe.serving.request import PredictError, PredictRequest, parse_request

#: Tokens kept past the model's maximum when a text is cut, so the tokens it reads are those of the whole text.
CUT_MARGIN_TOKENS = 32


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
    limits: ServingLimits = field(default_factory=ServingLimits)
    _prompts: dict[str, Prompts] = field(default_factory=dict)
    _batcher: MicroBatcher | None = None
    # Copies of the tokenizer for counting in request threads: a Hugging Face fast tokenizer must not be
    # called from two threads at once ("Already borrowed"), and the model's own one belongs to the batcher.
    _tokenizers: queue.LifoQueue = field(default_factory=queue.LifoQueue)
    _tokenizer: object = None

    def __post_init__(self):
        from embedpipe.models import encode

        self._tokenizer = copy.deepcopy(self.model.tokenizer)  # copied before the batcher first uses it
        self._batcher = MicroBatcher(lambda texts: encode(self.model, texts, batch_size=self.batch_size))

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
        return parse_request(body, dimension=self.dimension, prompts=self.prompts, limits=self.limits)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Each text's tokens, special tokens included (`statistics.token_count`)."""
        return self.measure(texts)[0]

    def measure(self, texts: list[str]) -> tuple[list[int], list[str]]:
        """Each text's token count, and the text cut a little past the model's maximum (what it reads of it).

        Raises:
            PredictError: naming the instance whose text the tokenizer refuses.
        """
        try:
            tokenizer = self._tokenizers.get_nowait()
        except queue.Empty:
            tokenizer = copy.deepcopy(self._tokenizer)
        try:
            offsets = bool(getattr(tokenizer, "is_fast", False))
            try:
                encoded = tokenizer(
                    texts, add_special_tokens=True, truncation=False, return_offsets_mapping=offsets, verbose=False
                )
            except Exception:
                for index, text in enumerate(texts):
                    try:
                        tokenizer([text], add_special_tokens=True, truncation=False, verbose=False)
                    except Exception as err:
                        raise PredictError(
                            f"instances[{index}].content cannot be tokenized (with its prompt and title): "
                            f"{type(err).__name__}: {err}"
                        ) from None
                raise
        finally:
            self._tokenizers.put(tokenizer)
        keep = self.max_seq_length + CUT_MARGIN_TOKENS
        counts, cut = [], []
        for i, (text, ids) in enumerate(zip(texts, encoded["input_ids"])):
            counts.append(len(ids))
            # offsets[keep] is a token of the text itself (only the last one is special), its start a boundary
            start = encoded["offset_mapping"][i][keep][0] if offsets and len(ids) > keep + 1 else 0
            cut.append(text[:start] if start > 0 else text)
        return counts, cut

    def predict(self, body, deadline: float | None = None) -> dict:
        """Answers one request body.

        Args:
            body: The parsed JSON body.
            deadline: `time.monotonic()` by which to answer (None: no deadline).

        Raises:
            PredictError: for a request that must be answered 400.
            DeadlineExceeded: when the deadline passed before the model answered.
        """
        import numpy as np

        request = self.parse(body)
        counts, texts = self.measure(request.texts)
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
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the request's deadline passed before it reached the model; retry later")
        try:
            vectors = self._batcher.encode(texts, deadline)
        except ItemFailed as err:
            where = "the request's instances" if err.index is None else f"instances[{err.index}].content"
            raise PredictError(f"{where} could not be encoded: {err}") from None
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
