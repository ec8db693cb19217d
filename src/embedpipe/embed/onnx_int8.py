"""The int8 CPU backend of the embedding job: our own ONNX export, int8 quantization, ONNX Runtime.

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
   to the fp32 vectors 0.94 instead of 0.996 for MiniLM; figures in benchmarks/README.md, embed_corpus).

Only the transformer runs in ONNX Runtime. Tokenization and everything after the transformer (Pooling,
Dense, Normalize) are sentence-transformers' own modules of the same model, run in torch on the
transformer's output, so pooling and normalisation are exactly those of `SentenceTransformer.encode`.
Models with other modules (Router, StaticEmbedding, LSTM, ...) are refused with the module named.

Example:
    >>> from embedpipe.embed.onnx_int8 import load_int8_model       # doctest: +SKIP
    >>> model = load_int8_model("default")                           # doctest: +SKIP
    >>> model.encode(["pgvector An extension."], normalize_embeddings=True).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from embedpipe import models

log = logging.getLogger(__name__)

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

_prepared_lock = threading.Lock()  # one preparation at a time per process (Beam's threads share the model)


class UnsupportedModelError(models.ModelLoadError):
    """The model has a module the int8 backend cannot run; the torch backend can."""


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


def _hint() -> str:
    return (f"the {BACKEND} backend runs a Transformer followed by any of {', '.join(SUPPORTED_AFTER_TRANSFORMER)}; "
            "use backend='torch' for this model")


def check_model_files(model: str) -> None:
    """The launching machine's check: refuses from `modules.json` alone (no model load) a model whose
    modules the int8 backend does not run. A folder without `modules.json` (a plain transformers model)
    becomes Transformer + mean Pooling, which is supported.

    Raises:
        UnsupportedModelError: naming the module and its position.
    """
    data = models.read_model_file(model, "modules.json")
    if not data:
        return
    try:
        entries = sorted(json.loads(data), key=lambda e: e.get("idx", 0))
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise models.ModelLoadError(f"model {model!r}: modules.json is not a list of modules: {err}") from err
    kinds = [str(e.get("type", "")).rsplit(".", 1)[-1] for e in entries]
    for index, kind in enumerate(kinds):
        allowed = ("Transformer",) if index == 0 else SUPPORTED_AFTER_TRANSFORMER
        if kind not in allowed:
            raise UnsupportedModelError(f"model {model!r}: module {index} in modules.json is {kind or 'of no type'}; {_hint()}")


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
        if text.get("method") != "forward" or output not in ("last_hidden_state", ["last_hidden_state"], ("last_hidden_state",)):
            raise UnsupportedModelError(
                f"{shown}: module 0 (Transformer) embeds text with {text.get('method')!r} -> {output!r}, "
                f"not forward -> last_hidden_state; {_hint()}"
            )
    if getattr(first, "module_output_name", "token_embeddings") != "token_embeddings":
        raise UnsupportedModelError(f"{shown}: module 0 (Transformer) writes {first.module_output_name!r}, not token embeddings; {_hint()}")
    for index, module in enumerate(modules[1:], start=1):
        if type(module).__name__ not in SUPPORTED_AFTER_TRANSFORMER:
            raise UnsupportedModelError(f"{shown}: module {index} is {type(module).__name__}; {_hint()}")


class _DropOnnxRuntimeChatter(logging.Filter):
    """Drops the optimizer's and quantizer's per-node INFO/WARNING lines (they log on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_onnxruntime():
    handlers = list(logging.getLogger().handlers)
    chatter = _DropOnnxRuntimeChatter()
    for handler in handlers:
        handler.addFilter(chatter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(chatter)


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


def _example_features(st_model, texts: Sequence[str] = CHECK_TEXTS):
    return st_model.preprocess(list(texts))


def export_onnx(st_model, path: str | Path) -> list[str]:
    """Writes the model's transformer as an fp32 ONNX graph (dynamic batch and sequence axes).

    Traced on texts of different lengths, so the padded path (attention mask applied) is the one recorded.

    Returns:
        The graph's input names.
    """
    import torch

    features = _example_features(st_model, CHECK_TEXTS[:2])
    names = [name for name in GRAPH_INPUTS if name in features]
    example = tuple(features[name].to("cpu") for name in names)
    wrapper = _token_embeddings_module(st_model[0].auto_model, names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    with torch.no_grad(), _export_patches():
        torch.onnx.export(
            wrapper, example, str(path), input_names=names, output_names=["token_embeddings"],
            dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False,
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
            return mask_function(*expand(batch, head, q, kv)).expand(batch.shape[0], head.shape[0], q.shape[0], kv.shape[0])

        return expanded

    originals = (masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex)
    masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex = broadcast_expansion, contextlib.nullcontext
    try:
        yield
    finally:
        masking_utils._vmap_expansion_sdpa, masking_utils.TransformGetItemToIndex = originals


def _session(path: str | Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _token_embeddings(session, features):
    feeds = {i.name: features[i.name].numpy() for i in session.get_inputs()}
    return session.run(["token_embeddings"], feeds)[0]


def fuse(st_model, fp32_path: Path, fused_path: Path) -> bool:
    """Fuses attention/LayerNorm/GELU (BERT-family models); True when the fused graph was written and
    agrees with the unfused one on CHECK_TEXTS (largest difference below 1e-3 of the largest value)."""
    config = st_model[0].auto_model.config
    model_type = getattr(config, "model_type", "")
    if model_type not in FUSED_MODEL_TYPES:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with _quiet_onnxruntime():
            optimized = optimize_model(str(fp32_path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
            optimized.save_model_to_file(str(fused_path))
        features = _example_features(st_model)
        difference = _relative_difference(_token_embeddings(_session(fused_path), features), _token_embeddings(_session(fp32_path), features))
    except Exception as err:  # noqa: BLE001 - fusion is an optimisation: without it the model still runs
        log.warning("ONNX Runtime could not fuse the %s graph (%s); quantizing it unfused", model_type, err)
        return False
    if difference > 1e-3:
        log.warning("the fused %s graph differs from the unfused one by %.2g; quantizing it unfused", model_type, difference)
        return False
    return True


def _relative_difference(got, expected) -> float:
    import numpy as np

    return float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def check_export(st_model, fp32_path: Path, model: str = "") -> float:
    """Compares the exported graph with the transformer in torch on CHECK_TEXTS (another batch size and
    other lengths than the traced example); returns the largest difference relative to the largest value.

    Raises:
        UnsupportedModelError: when they differ by more than 1e-3 (the trace did not generalise).
    """
    import torch

    features = _example_features(st_model)
    with torch.no_grad():
        expected = st_model[0](dict(features))["token_embeddings"].float().numpy()
    difference = _relative_difference(_token_embeddings(_session(fp32_path), features), expected)
    if difference > 1e-3:
        raise UnsupportedModelError(
            f"model {model!r}: the exported ONNX graph differs from the model in torch by {difference:.2g} "
            "(relative) on texts other than the traced ones; use backend='torch'"
        )
    return difference


def kept_in_fp32(onnx_path: str | Path) -> list[str]:
    """The MatMul left unquantized: the first feed-forward output (the first MatMul fed by an activation)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    made_by = {output: node for node in graph.node for output in node.output}

    def after_activation(name: str, depth: int = 0) -> bool:
        node = made_by.get(name)
        if node is None or depth > 6:
            return False
        if node.op_type in ("Erf", "Gelu", "FastGelu", "BiasGelu", "Tanh", "Sigmoid", "Relu"):
            return True
        if node.op_type in ("Mul", "Add", "Div", "Cast"):
            return any(after_activation(i, depth + 1) for i in node.input)
        return False

    return [node.name for node in graph.node if node.op_type == "MatMul" and after_activation(node.input[0])][:1]


def quantize(fp32_path: str | Path, int8_path: str | Path) -> dict:
    """int8 weights, one scale per output channel, for every MatMul/Attention with constant weights but
    the first feed-forward output; activations quantized per batch (dynamic).

    Weights use 7 bits (`reduce_range`): ONNX Runtime's u8s8 kernels on x86 CPUs without VNNI (AVX2 only)
    can saturate their 16-bit intermediate sums with full-range weights, which pushed an EmbeddingGemma-like
    model below the cosine threshold of tests/unit/test_embed_int8.py on such a CPU; with 7 bits the
    vectors stay close to fp32 on every x86 CPU.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = kept_in_fp32(fp32_path)
    with _quiet_onnxruntime():
        quantize_dynamic(
            str(fp32_path), str(int8_path), op_types_to_quantize=["MatMul", "Attention"], per_channel=True,
            weight_type=QuantType.QInt8, nodes_to_exclude=excluded, reduce_range=True,
            use_external_data_format=os.path.getsize(fp32_path) > 1_800_000_000,
            # Fused operators (Attention, SkipLayerNormalization) have no ONNX shape inference: assume float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return {"fp32_matmuls": excluded}


def _check_against_fp32(st_model, int8_path: Path) -> float:
    """Mean cosine of the int8 transformer's pooled vectors to the fp32 model's on CHECK_TEXTS."""
    import torch

    int8 = Int8Model(st_model, int8_path, free_weights=False)
    expected = st_model.encode(list(CHECK_TEXTS), prompt="", convert_to_tensor=True, normalize_embeddings=True,
                               show_progress_bar=False).float().cpu()
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
    """
    fingerprint = models.model_fingerprint(model)
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
            (work / "prepared.json").write_text(json.dumps(
                {"model": model, "fingerprint": fingerprint, "method": METHOD, "inputs": inputs,
                 "export_relative_difference": export_difference, "fused": fused,
                 "mean_cosine_to_fp32": round(cosine, 5), "seconds": round(seconds, 1), **details}, indent=1))
            try:
                work.rename(target)
            except OSError:  # another process finished first: use its copy
                if not (target / ONNX_FILE).is_file():
                    raise
            log.info("%s: prepared the %s model in %.1f s (fused: %s, mean cosine to fp32 %.4f) -> %s",
                     model, BACKEND, seconds, fused, cosine, target)
            if cosine < 0.98:
                log.warning("%s: the %s vectors are far from fp32 (mean cosine %.4f); consider backend='torch'", model, BACKEND, cosine)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target


def load_for_export(model: str):
    """The fp32 SentenceTransformer on the CPU, with eager attention (its graph is the one ONNX Runtime fuses)."""
    return models.load_model(model, device="cpu", model_kwargs={"attn_implementation": "eager"})


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
        self.session = _session(onnx_path, threads or torch.get_num_threads())
        self.prompts = dict(getattr(st_model, "prompts", {}) or {})
        self.device = torch.device("cpu")
        self._dimension = int(models.embedding_dimension(st_model))
        if free_weights:
            try:
                st_model[0].auto_model.to("meta")
            except Exception:  # noqa: BLE001 - keeping the weights only costs memory
                pass

    #: No padded-token limit per pass by default: unlike torch fp32, ONNX Runtime's int8 kernels ran 500
    #: SciFact abstracts faster in passes of 32 texts (6.1 s) than of 2,048 tokens (6.6 s;
    #: benchmarks/forward_passes.py).
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
        features["token_embeddings"] = torch.from_numpy(_token_embeddings(self.session, features))
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
    """
    path = models.resolve_model_path(model)
    st_model = load_for_export(path)
    check_supported(st_model, model)
    folder = prepare_int8_model(path, st_model, cache_dir=cache_dir)
    return Int8Model(st_model, folder / ONNX_FILE, threads=threads)


__all__ = ["BACKEND", "Int8Model", "UnsupportedModelError", "check_model_files", "check_supported", "export_onnx",
           "fuse", "load_for_export", "load_int8_model", "prepare_int8_model", "quantize"]
