"""Stage 2 of the int8 backend: fusing the exported graph (BERT-family models only).

Owns `fuse`: ONNX Runtime's transformer optimizer fuses attention, LayerNorm and GELU into single
operators; the fused graph is checked against the unfused one and dropped if the two disagree (fusion
is an optimisation: without it the model still runs).

Example:
    >>> from pathlib import Path                                       # doctest: +SKIP
    >>> from embedpipe.backend.optimize import fuse                    # doctest: +SKIP
    >>> from embedpipe.models import load_model                        # doctest: +SKIP
    >>> st_model = load_model("default", device="cpu")                 # doctest: +SKIP
    >>> fuse(st_model, Path("model.fp32.onnx"), Path("model.fused.onnx"))   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
from pathlib import Path

from embedpipe.backend.utils import (
    FUSED_MODEL_TYPES,
    example_features,
    open_session,
    quiet_onnxruntime,
    relative_difference,
    token_embeddings,
)

log = logging.getLogger(__name__)


def fuse(st_model, fp32_path: Path, fused_path: Path) -> bool:
    """Fuses attention/LayerNorm/GELU (BERT-family models); True when the fused graph was written and
    agrees with the unfused one on CHECK_TEXTS (largest difference below 1e-3 of the largest value)."""
    config = st_model[0].auto_model.config
    model_type = getattr(config, "model_type", "")
    if model_type not in FUSED_MODEL_TYPES:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet_onnxruntime():
            optimized = optimize_model(
                str(fp32_path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
            )
            optimized.save_model_to_file(str(fused_path))
        features = example_features(st_model)
        fused = token_embeddings(open_session(fused_path), features)
        difference = relative_difference(fused, token_embeddings(open_session(fp32_path), features))
    except Exception as err:  # noqa: BLE001 - fusion is an optimisation: without it the model still runs
        log.warning("ONNX Runtime could not fuse the %s graph (%s); quantizing it unfused", model_type, err)
        return False
    if difference > 1e-3:
        log.warning(
            "the fused %s graph differs from the unfused one by %.2g; quantizing it unfused", model_type, difference
        )
        return False
    return True
