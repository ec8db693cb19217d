"""What a model's files say without loading it: its prompts, a fingerprint of its files, its identity.

Owns `read_model_file` (one small file of a local, `gs://` or hub model), `model_prompts`,
`model_fingerprint`, `model_identity` (what, besides the text, decides a vector), and the backends and
precisions a model may run with (`BACKENDS`, `PRECISIONS`), which are part of that identity.

Example:
    >>> from embedpipe.models import model_identity, model_prompts    # doctest: +SKIP
    >>> model_prompts("default")                                      # doctest: +SKIP
    {}
    >>> model_identity("default", backend="onnx-int8")                # doctest: +SKIP
    'files:aad501698b1a7a90|backend=onnx-int8|dim=full'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from embedpipe import storage
from embedpipe.models.loading import ModelLoadError, resolve_model_path

#: "torch": sentence-transformers as it is; "onnx-int8": the transformer quantized to int8 and run by
#: ONNX Runtime on CPU (`embedpipe.backend`), prepared from the model when the job starts.
BACKENDS = ("torch", "onnx-int8")
PRECISIONS = ("auto", "fp32", "bf16")


def read_model_file(model: str, name: str) -> bytes | None:
    """One small file of a model folder (local, gs:// or the hub cache), or None when it has none.

    Args:
        model: Any reference `resolve_model_path` accepts.
        name: The file's path inside the model folder, e.g. "modules.json".

    Returns:
        The file's bytes, or None when the model has no such file.
    """
    ref = (model or "").strip()
    if storage.is_gcs(ref):
        uri = ref.rstrip("/") + "/" + name
        return storage.read_bytes(uri) if storage.exists(uri) else None
    path = resolve_model_path(ref)
    if Path(path).is_dir():
        file = Path(path) / name
        return file.read_bytes() if file.is_file() else None
    try:  # a hub id: the file from the local cache (HF_HUB_OFFLINE) or the hub
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(path, name)).read_bytes()
    except Exception:  # noqa: BLE001 - a hub model without this file
        return None


def model_prompts(model: str) -> dict[str, str]:
    """The model's named prompts (`config_sentence_transformers.json`), without loading the model.

    Raises:
        ModelLoadError: when the model folder does not exist or is not a model folder.
    """
    data = read_model_file(model, "config_sentence_transformers.json")
    if not data:
        return {}
    try:
        return dict(json.loads(data).get("prompts") or {})
    except (json.JSONDecodeError, AttributeError) as err:
        raise ModelLoadError(f"model {model!r}: config_sentence_transformers.json is not valid JSON: {err}") from err


def model_fingerprint(model: str, gcs_client=None) -> str:
    """A short hash that changes when the model's files change.

    Local folder: the content of every file. `gs://` folder: the objects' names, sizes and MD5 hashes (no
    download). Hub id: the id itself (pin a folder if you need re-embedding to follow hub updates).
    """
    ref = (model or "").strip()
    digest = hashlib.sha256()
    if storage.is_gcs(ref):
        bucket, prefix = storage.split_gcs_uri(ref)
        prefix = prefix.rstrip("/") + "/"
        client = storage.gcs_client(gcs_client)
        for blob in sorted(client.list_blobs(bucket, prefix=prefix), key=lambda b: b.name):
            digest.update(f"{blob.name[len(prefix) :]}\0{blob.size}\0{blob.md5_hash or blob.crc32c}\n".encode())
        return "gcs:" + digest.hexdigest()[:16]
    path = Path(resolve_model_path(ref))
    if not path.is_dir():
        return "hub:" + ref
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or relative.lower().endswith(".md"):
            continue  # git attributes, caches and model cards do not change vectors
        digest.update(relative.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return "files:" + digest.hexdigest()[:16]


def model_identity(model: str, *, backend: str = "torch", output_dimensionality: int = 0) -> str:
    """What, besides the text, decides a vector: model files, backend and output size."""
    return f"{model_fingerprint(model)}|backend={backend}|dim={output_dimensionality or 'full'}"
