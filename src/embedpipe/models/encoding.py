"""Encoding with a loaded model: its output size, forward passes cut by length, and progress logs.

Owns `encode` (formatted texts in, float32 vectors out, no prompt added), `embedding_dimension` (the one
helper every stage asks for a model's output size), `truncate_and_normalize` (Matryoshka cuts), and the
way texts are grouped into forward passes (`plan_batches`, `encode_in_passes`, `encode_in_chunks`).

Example:
    >>> from embedpipe.models import encode, embedding_dimension, load_model   # doctest: +SKIP
    >>> model = load_model("default")                                          # doctest: +SKIP
    >>> encode(model, ["hello"]).shape, embedding_dimension(model)             # doctest: +SKIP
    ((1, 384), 384)
"""

from __future__ import annotations

from collections.abc import Sequence

from embedpipe.threads import adapt_threads


def encode(
    model, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True, show_progress_bar: bool = False
):
    """Encodes already formatted texts (see `embedpipe.prompts`) to a float32 numpy array.

    The model's default prompt is switched off (`prompt=""`): prompts are applied by
    `embedpipe.prompts` so every stage applies the same ones. torch's threads are this process's budget,
    less the cores other processes keep busy (`embedpipe.threads.adapt_threads`; `embedpipe serve` too).
    """
    adapt_threads()
    return model.encode(
        list(texts),
        batch_size=batch_size,
        prompt="",
        normalize_embeddings=normalize,
        convert_to_numpy=True,
        show_progress_bar=show_progress_bar,
    )


def embedding_dimension(model) -> int | None:
    """The size of the vectors a loaded model outputs, before any `output_dimensionality` cut.

    The one place that asks a model for it: sentence-transformers 6 renamed
    `get_sentence_embedding_dimension` to `get_embedding_dimension`; a model with either answers.

    Args:
        model: A SentenceTransformer, the int8 model (`embedpipe.backend.Int8Model`) or anything
            with one of the two methods.

    Returns:
        The number of dimensions, or None when the model cannot tell (sentence-transformers answers
        None for a model none of whose modules knows its output size).
    """
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimension = getter()
    return None if dimension is None else int(dimension)


def truncate_and_normalize(vectors, output_dimensionality: int = 0):
    """Keeps the first `output_dimensionality` dimensions (0 = all) and scales each row to length 1."""
    import numpy as np

    if output_dimensionality:
        vectors = vectors[:, :output_dimensionality]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


#: Padded tokens per forward pass on CPU when `tokens_per_batch` is 0 ("auto"); on GPU the default is
#: no token limit (`batch_size` texts). On CPU such passes ran faster than 32 texts per pass
#: (sentence-transformers' default): benchmarks/README.md, "forward_passes".
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
        list(texts),
        truncation=limit is not None,
        max_length=limit,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]
    return [len(row) for row in ids]


def encode_in_passes(model, texts: Sequence[str], encode_fn, *, batch_size: int, tokens_per_batch: int):
    """Encodes `texts` in the forward passes `plan_batches` makes; rows come back in the input order.

    Args:
        model: The model whose tokenizer measures the texts (`token_lengths`).
        encode_fn: `encode_fn(texts, batch_size)` -> (len(texts), dim) array, one pass per call here; it
            adapts torch's threads before its pass, as `encode` does (`embedpipe.threads.adapt_threads`).
        batch_size: At most this many texts per pass.
        tokens_per_batch: At most this many padded tokens per pass, as `resolve_tokens_per_batch`
            returns it (0 = no limit: `encode_fn` gets all texts with `batch_size`).
    """
    import numpy as np

    texts = list(texts)
    lengths = token_lengths(model, texts) if tokens_per_batch and len(texts) > 1 else None
    if lengths is None:
        return encode_fn(texts, batch_size)
    vectors = None
    for rows in plan_batches(lengths, batch_size=batch_size, tokens_per_batch=tokens_per_batch):
        part = encode_fn([texts[i] for i in rows], len(rows))
        if vectors is None:
            vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        vectors[rows] = part
    return vectors


def encode_in_chunks(
    model,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    chunk: int = 2048,
    what: str = "texts",
    tokens_per_batch: int = 0,
):
    """Encodes many formatted texts with progress lines (`embedpipe.progress`); returns float32, normalised.

    Texts are sorted by length first, so each forward pass pads little, then returned in the input order.
    A pass holds at most `batch_size` texts and `tokens_per_batch` padded tokens (see `plan_batches`;
    0 = auto, -1 = no limit). Progress advances after every pass, throttled by time.
    """
    import numpy as np

    from embedpipe.progress import Progress

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    result = np.zeros((len(texts), embedding_dimension(model)), dtype=np.float32)
    budget = resolve_tokens_per_batch(model, tokens_per_batch)
    progress = Progress(what, total=len(texts), unit="texts")

    def encode_pass(part, size):
        vectors = encode(model, part, batch_size=size)
        progress.update(len(part))
        return vectors

    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        result[rows] = encode_in_passes(
            model, [texts[i] for i in rows], encode_pass, batch_size=batch_size, tokens_per_batch=budget
        )
    progress.finish()
    return result
