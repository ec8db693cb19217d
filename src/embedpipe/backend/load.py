"""Stage 4 of the int8 backend: preparing the int8 model once (cached) and running it.

Owns the cache of prepared models (`cache_root`, `cache_key`), `prepare_int8_model` (export, fuse,
quantize and check, once per model fingerprint), `Int8Model` (the transformer in ONNX Runtime, the rest
of the model in sentence-transformers) and `load_int8_model`.

Example:
    >>> from embedpipe.backend.load import load_int8_model        # doctest: +SKIP
    >>> model = load_int8_model("default")                         # doctest: +SKIP
    >>> model.encode(["pgvector An extension."], normalize_embeddings=True).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from embedpipe.backend.export import check_export, export_onnx
from embedpipe.backend.optimize import fuse
from embedpipe.backend.quantize import quantize
from embedpipe.backend.utils import (
    BACKEND,
    CHECK_TEXTS,
    METHOD,
    ONNX_FILE,
    UnsupportedModelError,
    check_supported,
    open_session,
    token_embeddings,
)
from embedpipe.models import embedding_dimension, load_model, model_fingerprint, resolve_model_path

log = logging.getLogger(__name__)

_prepared_lock = threading.Lock()  # one preparation at a time per process (Beam's threads share the model)


def require_onnx() -> None:
    """Checks that the `int8` extra (onnx, onnxruntime) is installed, before any model is loaded.

    Raises:
        MissingExtra: either is missing; the message is the `pip install` line that adds them.
    """
    from embedpipe.extras import require

    for module in ("onnxruntime", "onnx"):
        require(module, "int8", "the onnx-int8 backend")


def cache_root() -> Path:
    """Where prepared int8 models live: `$EMBEDPIPE_CACHE_DIR/onnx-int8`, else under the temp folder."""
    base = os.environ.get("EMBEDPIPE_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "embedpipe-cache")
    return Path(base) / BACKEND


def cache_key(fingerprint: str) -> str:
    """Folder name of a prepared model: model files, method, and the exporter/quantizer versions."""
    import onnxruntime
    import torch

    text = f"{fingerprint}|{METHOD}|torch={torch.__version__}|onnxruntime={onnxruntime.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _check_against_fp32(st_model, int8_path: Path) -> float:
    """Mean cosine of the int8 transformer's pooled vectors to the fp32 model's on CHECK_TEXTS."""

    int8 = Int8Model(st_model, int8_path, free_weights=False)
    expected = (
        st_model.encode(
            list(CHECK_TEXTS), prompt="", convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
        .float()
        .cpu()
    )
    got = int8.encode(list(CHECK_TEXTS), prompt="", convert_to_tensor=True, normalize_embeddings=True)
    return float((expected * got).sum(dim=1).mean())


def prepare_int8_model(model: str, st_model=None, *, cache_dir: str | Path | None = None) -> Path:
    """Exports, fuses and quantizes the model once; returns the folder holding `model.int8.onnx`.

    The folder is `cache_dir` (default `cache_root()`) / a key of the model fingerprint, the method and
    the torch/onnxruntime versions, with `prepared.json` saying how it was made. It is written under a
    temporary name and renamed when complete, so processes preparing the same model at once never read
    half a file.

    Raises:
        UnsupportedModelError: a module this backend does not run, or a transformer that does not export.
        MissingExtra: onnx or onnxruntime is not installed (the `int8` extra).
    """
    require_onnx()
    fingerprint = model_fingerprint(model)
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / cache_key(fingerprint)
    with _prepared_lock:
        if (target / ONNX_FILE).is_file():
            return target
        if st_model is None:
            st_model = load_for_export(model)
        check_supported(st_model, model)
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".preparing-", dir=root))
        try:
            started = time.monotonic()
            try:
                inputs = export_onnx(st_model, work / "model.fp32.onnx")
            except Exception as err:  # noqa: BLE001 - the tracer's errors are long; say what failed
                raise UnsupportedModelError(
                    f"model {model!r}: the transformer could not be exported to ONNX ({type(err).__name__}: {err}); use backend='torch'"
                ) from err
            export_difference = check_export(st_model, work / "model.fp32.onnx", model)
            fused = fuse(st_model, work / "model.fp32.onnx", work / "model.fused.onnx")
            details = quantize(work / ("model.fused.onnx" if fused else "model.fp32.onnx"), work / ONNX_FILE)
            for leftover in [*work.glob("model.fp32.onnx*"), *work.glob("model.fused.onnx*")]:
                leftover.unlink()
            cosine = _check_against_fp32(st_model, work / ONNX_FILE)
            seconds = time.monotonic() - started
            (work / "prepared.json").write_text(
                json.dumps(
                    {
                        "model": model,
                        "fingerprint": fingerprint,
                        "method": METHOD,
                        "inputs": inputs,
                        "export_relative_difference": export_difference,
                        "fused": fused,
                        "mean_cosine_to_fp32": round(cosine, 5),
                        "seconds": round(seconds, 1),
                        **details,
                    },
                    indent=1,
                )
            )
            try:
                work.rename(target)
            except OSError:  # another process finished first: use its copy
                if not (target / ONNX_FILE).is_file():
                    raise
            log.info(
                "%s: prepared the %s model in %.1f s (fused: %s, mean cosine to fp32 %.4f) -> %s",
                model,
                BACKEND,
                seconds,
                fused,
                cosine,
                target,
            )
            if cosine < 0.98:
                log.warning(
                    "%s: the %s vectors are far from fp32 (mean cosine %.4f); consider backend='torch'",
                    model,
                    BACKEND,
                    cosine,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target


def load_for_export(model: str):
    """The fp32 SentenceTransformer on the CPU, with eager attention (its graph is the one ONNX Runtime fuses)."""
    return load_model(model, device="cpu", model_kwargs={"attn_implementation": "eager"})


class Int8Model:
    """A sentence-transformers model whose transformer runs int8 in ONNX Runtime, for encoding only.

    It answers the calls the embedding job and `embedpipe.evaluate` make of a SentenceTransformer:
    `encode(...)`, `get_embedding_dimension()`, `prompts`, `device`.

    Args:
        st_model: The fp32 SentenceTransformer (its tokenizer and post-transformer modules are used).
        onnx_path: The quantized transformer (`prepare_int8_model`).
        threads: ONNX Runtime threads (default: torch's thread count, as the torch backend uses).
        free_weights: Drop the fp32 transformer's weights from `st_model` (only its tokenizer is used).

    Example:
        >>> model = Int8Model(load_for_export("default"), prepare_int8_model("default") / ONNX_FILE)  # doctest: +SKIP
        >>> model.encode(["hello"], normalize_embeddings=True).shape                                  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, st_model, onnx_path: str | Path, *, threads: int = 0, free_weights: bool = True):
        import torch

        self._st = st_model
        self._after = list(st_model)[1:]
        self.session = open_session(onnx_path, threads or torch.get_num_threads())
        self.prompts = dict(getattr(st_model, "prompts", {}) or {})
        self.device = torch.device("cpu")
        self._dimension = int(embedding_dimension(st_model))
        if free_weights:
            try:
                st_model[0].auto_model.to("meta")
            except Exception:  # noqa: BLE001 - keeping the weights only costs memory
                pass

    #: No padded-token limit per pass by default: unlike torch fp32, ONNX Runtime's int8 kernels ran
    #: SciFact abstracts faster in passes of 32 texts than of 2,048 tokens (benchmarks/README.md,
    #: "forward_passes").
    auto_tokens_per_batch = -1

    def get_embedding_dimension(self) -> int:
        return self._dimension

    @property
    def tokenizer(self):
        return self._st.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self._st.max_seq_length

    get_sentence_embedding_dimension = get_embedding_dimension

    def _forward(self, texts: list[str], prompt: str | None):
        import torch

        features = self._st.preprocess(texts, prompt=prompt or None)
        features["token_embeddings"] = torch.from_numpy(token_embeddings(self.session, features))
        with torch.no_grad():
            for module in self._after:
                features = module(features)
        return features["sentence_embedding"]

    def encode(
        self,
        sentences: Sequence[str],
        *,
        batch_size: int = 32,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        convert_to_tensor: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
        **_ignored,
    ):
        """Embeds texts as `SentenceTransformer.encode` does: sorted by length, batches, input order back."""
        import numpy as np
        import torch

        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        result = torch.zeros((len(texts), self._dimension), dtype=torch.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            result[torch.from_numpy(rows)] = self._forward([texts[i] for i in rows], prompt).float()
        if normalize_embeddings:
            result = torch.nn.functional.normalize(result, p=2, dim=1)
        if convert_to_tensor:
            return result
        vectors = result.numpy()
        return vectors[0] if isinstance(sentences, str) else vectors


def load_int8_model(model: str = "default", *, cache_dir: str | Path | None = None, threads: int = 0) -> Int8Model:
    """Prepares (or reuses) the int8 model of `model` and opens it.

    Raises:
        ModelLoadError: the model cannot be loaded.
        UnsupportedModelError: the model has modules this backend does not run.
        MissingExtra: onnx or onnxruntime is not installed (the `int8` extra).
    """
    require_onnx()
    path = resolve_model_path(model)
    st_model = load_for_export(path)
    check_supported(st_model, model)
    folder = prepare_int8_model(path, st_model, cache_dir=cache_dir)
    return Int8Model(st_model, folder / ONNX_FILE, threads=threads)
