"""What the int8 backend's stages share: its names and method, the model checks, ONNX Runtime helpers.

Owns the constants (`BACKEND`, `METHOD`, `ONNX_FILE`, `CHECK_TEXTS`, ...), `UnsupportedModelError`, the
two checks that refuse a model this backend cannot run (`check_model_files` from `modules.json` alone,
`check_supported` on a loaded model), and the small ONNX Runtime helpers the export, fuse and load
stages all use (`open_session`, `token_embeddings`, `example_features`, `relative_difference`,
`quiet_onnxruntime`).

Example:
    >>> from embedpipe.backend.utils import check_model_files     # doctest: +SKIP
    >>> check_model_files("default")  # None: MiniLM is Transformer, Pooling, Normalize   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from embedpipe.models import ModelLoadError, read_model_file

BACKEND = "onnx-int8"
#: Changes whenever the export or quantization changes, so cached models are prepared again.
METHOD = "export-eager-opset17|fuse-bert|dynamic-int8-per-channel-reduce-range|first-ffn-out-fp32|v2"
#: Modules allowed after the transformer; they run as sentence-transformers runs them.
SUPPORTED_AFTER_TRANSFORMER = ("Pooling", "Dense", "Normalize")
#: Inputs the exported graph may take, in this order (whichever the tokenizer produces).
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Architectures (config.model_type) whose graphs ONNX Runtime's BERT optimizer fuses.
FUSED_MODEL_TYPES = ("bert",)
ONNX_FILE = "model.int8.onnx"
#: Texts the prepared model is checked on (mean cosine to fp32, logged and kept in prepared.json).
CHECK_TEXTS = (
    "pgvector is an open-source extension for vector similarity search in Postgres.",
    "Dataflow runs Apache Beam pipelines on managed workers.",
    "Mutations in BRCA1 increase the risk of breast and ovarian cancer.",
    "The mitochondrion is the powerhouse of the cell.",
    "Wie spät ist es?",
    "short",
    "Kubeflow Pipelines compiles a pipeline into YAML that Vertex AI runs; each step is a container "
    "with typed inputs and outputs, and artifacts are passed between steps as files in Cloud Storage.",
)


class UnsupportedModelError(ModelLoadError):
    """The model has a module the int8 backend cannot run; the torch backend can."""


def _hint() -> str:
    return (
        f"the {BACKEND} backend runs a Transformer followed by any of {', '.join(SUPPORTED_AFTER_TRANSFORMER)}; "
        "use backend='torch' for this model"
    )


def check_model_files(model: str) -> None:
    """The launching machine's check: refuses from `modules.json` alone (no model load) a model whose
    modules the int8 backend does not run. A folder without `modules.json` (a plain transformers model)
    becomes Transformer + mean Pooling, which is supported.

    Raises:
        UnsupportedModelError: naming the module and its position.
    """
    data = read_model_file(model, "modules.json")
    if not data:
        return
    try:
        entries = sorted(json.loads(data), key=lambda e: e.get("idx", 0))
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ModelLoadError(f"model {model!r}: modules.json is not a list of modules: {err}") from err
    kinds = [str(e.get("type", "")).rsplit(".", 1)[-1] for e in entries]
    for index, kind in enumerate(kinds):
        allowed = ("Transformer",) if index == 0 else SUPPORTED_AFTER_TRANSFORMER
        if kind not in allowed:
            raise UnsupportedModelError(
                f"model {model!r}: module {index} in modules.json is {kind or 'of no type'}; {_hint()}"
            )


def check_supported(st_model, model: str = "") -> None:
    """Refuses, naming the module, a loaded model the int8 backend would not embed as sentence-transformers does.

    Supported: a sentence-transformers `Transformer` whose text input runs `forward` and outputs
    `last_hidden_state` as token embeddings, followed by any of Pooling, Dense and Normalize.

    Raises:
        UnsupportedModelError: with the module's position and type, and what would work instead.
    """
    shown = f"model {model!r}" if model else "the model"
    modules = list(st_model)
    first = modules[0] if modules else None
    if type(first).__name__ != "Transformer" or not hasattr(first, "auto_model"):
        raise UnsupportedModelError(f"{shown}: module 0 is {type(first).__name__}, not a Transformer; {_hint()}")
    text = (getattr(first, "modality_config", None) or {}).get("text")
    if text is not None:
        output = text.get("method_output_name")
        if text.get("method") != "forward" or output not in (
            "last_hidden_state",
            ["last_hidden_state"],
            ("last_hidden_state",),
        ):
            raise UnsupportedModelError(
                f"{shown}: module 0 (Transformer) embeds text with {text.get('method')!r} -> {output!r}, "
                f"not forward -> last_hidden_state; {_hint()}"
            )
    if getattr(first, "module_output_name", "token_embeddings") != "token_embeddings":
        raise UnsupportedModelError(
            f"{shown}: module 0 (Transformer) writes {first.module_output_name!r}, not token embeddings; {_hint()}"
        )
    for index, module in enumerate(modules[1:], start=1):
        if type(module).__name__ not in SUPPORTED_AFTER_TRANSFORMER:
            raise UnsupportedModelError(f"{shown}: module {index} is {type(module).__name__}; {_hint()}")


class _DropOnnxRuntimeChatter(logging.Filter):
    """Drops the optimizer's and quantizer's per-node INFO/WARNING lines (they log on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def quiet_onnxruntime():
    """Within it, ONNX Runtime's optimizer and quantizer log only errors."""
    handlers = list(logging.getLogger().handlers)
    chatter = _DropOnnxRuntimeChatter()
    for handler in handlers:
        handler.addFilter(chatter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(chatter)


def example_features(st_model, texts: Sequence[str] = CHECK_TEXTS):
    """The model's tokenizer output (token ids, attention mask, ...) for `texts`, as torch tensors."""
    return st_model.preprocess(list(texts))


def open_session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session on the graph at `path`, all graph optimizations on.

    Args:
        path: The ONNX file.
        threads: Intra-op threads (0 = ONNX Runtime's default).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def token_embeddings(session, features):
    """Runs the exported transformer: the graph's inputs taken from `features`; returns its token embeddings."""
    feeds = {i.name: features[i.name].numpy() for i in session.get_inputs()}
    return session.run(["token_embeddings"], feeds)[0]


def relative_difference(got, expected) -> float:
    """The largest absolute difference between two arrays, relative to the largest value of `expected`."""
    import numpy as np

    return float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))
