"""The int8 CPU backend ("onnx-int8"): our own ONNX export, int8 quantization, ONNX Runtime.

It sits between the models layer (which it uses) and the embedding job (which uses it): the job's
encoder loads a model through `load_int8_model` when its backend is "onnx-int8".

At the start of a job the model's transformer is prepared once and cached in a folder keyed by the
model's fingerprint (later jobs, and the other processes of a worker, reuse it):

1. export: `torch.onnx.export` of the transformer alone (token ids in, token embeddings out), traced
   with eager attention so that ONNX Runtime recognises the attention pattern;
2. fuse (BERT-family models only): ONNX Runtime's transformer optimizer fuses attention, LayerNorm and
   GELU into single operators; the fused graph is checked against the unfused one and dropped if the
   two disagree;
3. quantize: ONNX Runtime's dynamic quantization, int8 weights with one scale per output channel,
   activations quantized per batch at run time (so no calibration data is needed). One matrix product
   stays fp32: the first block's feed-forward output, whose GELU activations have the largest outliers.
   One scale per tensor instead of per channel is what costs the naive method its quality (mean cosine
   to the fp32 vectors: benchmarks/README.md, "onnx-int8 backend").

Only the transformer runs in ONNX Runtime. Tokenization and everything after the transformer (Pooling,
Dense, Normalize) are sentence-transformers' own modules of the same model, run in torch on the
transformer's output, so pooling and normalisation are exactly those of `SentenceTransformer.encode`.
Models with other modules (Router, StaticEmbedding, LSTM, ...) are refused with the module named.

Modules, one per stage as in sentence-transformers' `backend/`:
    utils: names and method (`BACKEND`, `METHOD`, `ONNX_FILE`), `UnsupportedModelError`, the model
        checks (`check_model_files`, `check_supported`) and ONNX Runtime helpers.
    export: `export_onnx` and `check_export`.
    optimize: `fuse`.
    quantize: `quantize` and `kept_in_fp32`.
    load: the cache, `prepare_int8_model`, `Int8Model`, `load_int8_model`.

Example:
    >>> from embedpipe.backend import load_int8_model               # doctest: +SKIP
    >>> model = load_int8_model("default")                           # doctest: +SKIP
    >>> model.encode(["pgvector An extension."], normalize_embeddings=True).shape  # doctest: +SKIP
    (1, 384)
"""

from embedpipe.backend.export import check_export, export_onnx
from embedpipe.backend.load import (
    Int8Model,
    cache_key,
    cache_root,
    load_for_export,
    load_int8_model,
    prepare_int8_model,
)
from embedpipe.backend.optimize import fuse
from embedpipe.backend.quantize import kept_in_fp32, quantize
from embedpipe.backend.utils import (
    BACKEND,
    METHOD,
    ONNX_FILE,
    UnsupportedModelError,
    check_model_files,
    check_supported,
)

__all__ = [
    "BACKEND",
    "METHOD",
    "ONNX_FILE",
    "Int8Model",
    "UnsupportedModelError",
    "cache_key",
    "cache_root",
    "check_export",
    "check_model_files",
    "check_supported",
    "export_onnx",
    "fuse",
    "kept_in_fp32",
    "load_for_export",
    "load_int8_model",
    "prepare_int8_model",
    "quantize",
]
