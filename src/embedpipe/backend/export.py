"""Stage 1 of the int8 backend: exporting the model's transformer to an fp32 ONNX graph, and checking it.

Owns `export_onnx` (`torch.onnx.export` of the transformer alone, token ids in, token embeddings out,
traced with eager attention so that ONNX Runtime recognises the attention pattern) and `check_export`
(the graph against the transformer in torch, on other texts than the traced ones).

Example:
    >>> from embedpipe.backend.export import export_onnx              # doctest: +SKIP
    >>> from embedpipe.models import load_model                       # doctest: +SKIP
    >>> export_onnx(load_model("default", device="cpu"), "model.fp32.onnx")   # doctest: +SKIP
    ['input_ids', 'attention_mask', 'token_type_ids']
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from embedpipe.backend.utils import (
    CHECK_TEXTS,
    GRAPH_INPUTS,
    UnsupportedModelError,
    example_features,
    open_session,
    relative_difference,
    token_embeddings,
)


def _token_embeddings_module(auto_model, names: Sequence[str]):
    """What gets exported: the transformer alone, token ids in, token embeddings out."""
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = auto_model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    return TokenEmbeddings().eval()


def export_onnx(st_model, path: str | Path) -> list[str]:
    """Writes the model's transformer as an fp32 ONNX graph (dynamic batch and sequence axes).

    Traced on texts of different lengths, so the padded path (attention mask applied) is the one recorded.

    Returns:
        The graph's input names.
    """
    import torch

    features = example_features(st_model, CHECK_TEXTS[:2])
    names = [name for name in GRAPH_INPUTS if name in features]
    example = tuple(features[name].to("cpu") for name in names)
    wrapper = _token_embeddings_module(st_model[0].auto_model, names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    with torch.no_grad(), _export_patches():
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


@contextlib.contextmanager
def _export_patches():
    """Lets the tracer follow attention masks that transformers builds with `torch.vmap` (EmbeddingGemma's
    bidirectional and sliding-window masks): the same mask functions, expanded by broadcasting as
    transformers' own non-vmap path does. The exported graph is checked against torch afterwards, so a
    patch that stops fitting a later transformers shows up there, not in the vectors."""
    try:
        from transformers import masking_utils

        expand = masking_utils._non_vmap_expansion_sdpa
        masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex  # noqa: B018 - both must exist
    except (ImportError, AttributeError):  # another transformers: export as it comes
        yield
        return

    def broadcast_expansion(mask_function):
        def expanded(batch, head, q, kv):
            return mask_function(*expand(batch, head, q, kv)).expand(
                batch.shape[0], head.shape[0], q.shape[0], kv.shape[0]
            )

        return expanded

    originals = (masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex)
    masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex = (
        broadcast_expansion,
        contextlib.nullcontext,
    )
    try:
        yield
    finally:
        masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex = originals


def check_export(st_model, fp32_path: Path, model: str = "") -> float:
    """Compares the exported graph with the transformer in torch on CHECK_TEXTS (another batch size and
    other lengths than the traced example); returns the largest difference relative to the largest value.

    Raises:
        UnsupportedModelError: when they differ by more than 1e-3 (the trace did not generalise).
    """
    import torch

    features = example_features(st_model)
    with torch.no_grad():
        expected = st_model[0](dict(features))["token_embeddings"].float().numpy()
    difference = relative_difference(token_embeddings(open_session(fp32_path), features), expected)
    if difference > 1e-3:
        raise UnsupportedModelError(
            f"model {model!r}: the exported ONNX graph differs from the model in torch by {difference:.2g} "
            "(relative) on texts other than the traced ones; use backend='torch'"
        )
    return difference
