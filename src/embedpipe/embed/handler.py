"""The model side of the embedding job: the Beam ModelHandler and the encoder it loads.

Model facts (identity, prompts, output size) live in `embedpipe.models`; the int8 backend in
`embedpipe.backend`.

`SentenceTransformerHandler` is the ModelHandler that `RunInference` uses. Beam loads one model per
worker process and shares it between the process's threads (`apache_beam.utils.shared`); with
`share_across_processes=True` (the default on GPU workers) Beam instead keeps `model_copies` models per
worker machine in a separate process (`multi_process_shared`) that every SDK process talks to, so a GPU
holds one copy of the model rather than one per process.

Each batch that RunInference hands over (about a thousand texts) is sorted by token count and cut into
forward passes of texts of similar length, at most `batch_size` texts and, on CPU, at most
`tokens_per_batch` padded tokens each (`embedpipe.models.encode_in_passes`): on CPU a forward pass of 32 long texts
is slower per token than one of 8 or of 2,048 tokens (benchmarks/README.md, "forward_passes").
Vectors are cut to `output_dimensionality` (Matryoshka) and re-normalised.

Example:
    >>> handler = SentenceTransformerHandler(ModelSettings("default", batch_size=32))   # doctest: +SKIP
    >>> encoder = handler.load_model()                                     # doctest: +SKIP
    >>> encoder.embed(["pgvector An extension."]).shape                   # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from embedpipe import models
from embedpipe.embed.settings import ModelSettings
from embedpipe.embed.types import EmbedItem
from embedpipe.progress import Progress
from embedpipe.threads import adapt_threads, thread_budget, use_budget


class Encoder:
    """A loaded model that turns formatted texts into normalised float32 vectors.

    RunInference's `model`: a plain object with one method, so that the same call works when Beam
    hands the handler a proxy to a model living in another process.

    Args:
        model: A SentenceTransformer (or the int8 model, which has the same `encode` and `tokenizer`).
        batch_size: At most this many texts per forward pass.
        output_dimensionality: Leading dimensions to keep (0 = all).
        tokens_per_batch: At most this many padded tokens per forward pass; 0 = auto
            (`embedpipe.models.CPU_TOKENS_PER_BATCH` on CPU, no limit on GPU or for the int8 model); -1 = no limit.
    """

    def __init__(self, model, *, batch_size: int, output_dimensionality: int = 0, tokens_per_batch: int = 0):
        self.model = model
        self.batch_size = batch_size
        self.output_dimensionality = output_dimensionality
        self.tokens_per_batch = models.resolve_tokens_per_batch(model, tokens_per_batch)

    @property
    def dimension(self) -> int:
        return self.output_dimensionality or models.embedding_dimension(self.model)

    def embed(self, texts: Sequence[str]):
        """Encodes already formatted texts (the model's own default prompt is not added)."""
        import numpy as np

        vectors = models.encode_in_passes(
            self.model, texts, self._encode, batch_size=self.batch_size, tokens_per_batch=self.tokens_per_batch
        )
        return models.truncate_and_normalize(vectors, self.output_dimensionality).astype(np.float32, copy=False)

    def _encode(self, texts: list[str], batch_size: int):
        adapt_threads()  # the cores other processes leave free, within this process's budget
        progress = _worker_progress()  # made before the first pass: its rate counts that pass's time
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            prompt="",
            normalize_embeddings=False,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        with _PROGRESS_LOCK:  # one forward pass done (RunInference's batches, ~1,000 texts, are too coarse)
            progress.update(len(texts))
        return vectors.float().cpu().numpy()


def load_encoder(
    model: str,
    *,
    batch_size: int = 32,
    output_dimensionality: int = 0,
    device: str = "",
    precision: str = "auto",
    backend: str = "torch",
    tokens_per_batch: int = 0,
    hf_token_secret: str = "",
) -> Encoder:
    """Loads the model for embedding.

    Args:
        model: Any reference `embedpipe.models.resolve_model_path` accepts.
        batch_size: Texts per forward pass.
        output_dimensionality: Keep this many leading dimensions (0 = all).
        device: "cpu", "cuda", ... ("" = cuda when there is one).
        precision: "auto" (bf16 on GPU, fp32 on CPU), "fp32" or "bf16".
        backend: "torch", or "onnx-int8" (CPU only: the model is exported and quantized once, cached by
            its fingerprint; see `embedpipe.backend`). Part of the model identity, so vectors of
            different backends are never mixed in an incremental run.
        tokens_per_batch: Padded tokens per forward pass (see `Encoder`).
        hf_token_secret: Secret Manager secret version with a Hugging Face token, for a gated hub model
            (read here, for the load only; see `embedpipe.models.use_hf_token`).

    Raises:
        ModelLoadError: the model cannot be loaded, or is smaller than `output_dimensionality`; the token's
            secret cannot be read.
        UnsupportedModelError (a ModelLoadError): "onnx-int8" with a model whose modules it cannot run.
    """
    if backend not in models.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(models.BACKENDS)}")
    if precision not in models.PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(models.PRECISIONS)}")
    import torch

    with models.use_hf_token(hf_token_secret):  # a gated hub model: its token for this load only
        path = models.local_model_path(model)
        if backend == "onnx-int8":
            if device not in ("", "cpu") or precision == "bf16":
                raise ValueError(
                    f"backend 'onnx-int8' runs in fp32/int8 on the CPU; got device={device!r}, precision={precision!r}"
                )
            from embedpipe.backend import load_int8_model

            st_model = load_int8_model(path)
        else:
            st_model = models.load_model(path, device=device or None)
            if precision == "bf16" or (precision == "auto" and st_model.device.type == "cuda"):
                st_model = st_model.to(torch.bfloat16)
            st_model.eval()
    encoder = Encoder(
        st_model, batch_size=batch_size, output_dimensionality=output_dimensionality, tokens_per_batch=tokens_per_batch
    )
    full = models.embedding_dimension(encoder.model)
    if output_dimensionality and full and output_dimensionality > full:
        raise models.ModelLoadError(
            f"output_dimensionality {output_dimensionality} is larger than model {model!r}'s {full} dimensions"
        )
    return encoder


class SentenceTransformerHandler(ModelHandler[EmbedItem, PredictionResult, Encoder]):
    """Beam ModelHandler that embeds job items (`EmbedItem`: the formatted text in `.input`).

    Args:
        settings: The model and how it runs (`ModelSettings`): batch sizes (each RunInference batch of
            `inference_batch_size` texts is sorted by length, so a larger batch pads less), padded tokens
            per pass (see `Encoder`), output size, device, precision, backend, and with
            `share_across_processes` `model_copies` models per worker machine, shared by all its SDK
            processes (GPU workers), instead of one per process.
        max_batch_duration_secs: Streaming: batch by time, bucketed by length.
    """

    def __init__(self, settings: ModelSettings, *, max_batch_duration_secs: int | None = None):
        size = settings.inference_batch_size
        batching: dict[str, Any] = dict(min_batch_size=size, max_batch_size=size)
        if max_batch_duration_secs:  # streaming: batch by time, bucketed by length (Beam's stateful batching)
            batching = dict(
                min_batch_size=1,
                max_batch_size=size,
                max_batch_duration_secs=max_batch_duration_secs,
                batch_length_fn=lambda item: len(item.input),
                batch_bucket_boundaries=[256, 512, 1024, 2048],
            )
        super().__init__(**batching, model_copies=settings.model_copies if settings.share_across_processes else None)
        self._settings = settings

    def load_model(self) -> Encoder:
        s = self._settings
        # This process's share of the machine's cores, decided once per process and logged.
        use_budget(thread_budget(threads=s.threads, processes=s.processes_per_machine))
        return load_encoder(
            s.model,
            batch_size=s.batch_size,
            output_dimensionality=s.output_dimensionality,
            device=s.device,
            precision=s.precision,
            backend=s.backend,
            tokens_per_batch=s.tokens_per_batch,
            hf_token_secret=s.hf_token_secret,
        )

    def run_inference(
        self, batch: Sequence[EmbedItem], model: Encoder, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        vectors = model.embed([item.input for item in batch])
        return [PredictionResult(item, vector) for item, vector in zip(batch, vectors)]

    def get_num_bytes(self, batch: Sequence[EmbedItem]) -> int:
        return sum(len(item.input) for item in batch)

    def get_metrics_namespace(self) -> str:
        return "embedpipe"

    def __repr__(self) -> str:
        return f"SentenceTransformerHandler(model={self._settings.model!r}, backend={self._settings.backend!r})"


#: Texts embedded by this process (a Beam worker, or the process that holds a model shared by a machine's
#: workers): one progress line per process (threads share it), every ~10 s.
_PROGRESS: dict[int, Progress] = {}
_PROGRESS_LOCK = threading.Lock()


def _worker_progress() -> Progress:
    """This worker process's count of texts embedded (throttled progress lines with the rate; no total: a
    worker does not know its share)."""
    pid = os.getpid()  # keyed by process: a forked worker starts its own count
    with _PROGRESS_LOCK:
        if pid not in _PROGRESS:
            _PROGRESS[pid] = Progress(f"embedding (worker {pid})", unit="texts")
        return _PROGRESS[pid]
