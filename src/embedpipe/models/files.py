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

    "Has none" means the folder, bucket or hub repository was read and holds no such file. A file that is
    there but cannot be read, a bucket that refuses access, a gated or missing hub repository, or a hub
    that cannot be reached while the file is not in the local cache is an error, not None: a caller must
    never take a read failure for a model without the file (documents embedded without their prompt).

    Args:
        model: Any reference `resolve_model_path` accepts.
        name: The file's path inside the model folder, e.g. "modules.json".

    Returns:
        The file's bytes, or None when the model has no such file.

    Raises:
        ModelLoadError: naming the model, the file and the reason when the file cannot be read.
    """
    ref = (model or "").strip()
    if storage.is_gcs(ref):
        uri = ref.rstrip("/") + "/" + name
        try:
            return storage.read_bytes(uri) if storage.exists(uri) else None
        except Exception as err:  # noqa: BLE001 - permission, network, missing bucket: a read failure
            raise ModelLoadError(f"model {model!r}: could not read {uri}: {type(err).__name__}: {err}") from err
    path = resolve_model_path(ref)
    if Path(path).is_dir():
        file = Path(path) / name
        if not file.exists():
            return None
        try:
            return file.read_bytes()
        except OSError as err:
            raise ModelLoadError(f"model {model!r}: could not read {file}: {err}") from err
    return _read_hub_file(model, path, name)


def _read_hub_file(model: str, repo_id: str, name: str) -> bytes | None:
    """A file of a hub model, from the local cache (HF_HUB_OFFLINE) or the hub; None when the repo has none."""
    from huggingface_hub import errors, hf_hub_download, try_to_load_from_cache

    try:
        return Path(hf_hub_download(repo_id, name)).read_bytes()
    except errors.RemoteEntryNotFoundError:  # the hub answered: the repository has no such file
        return None
    except errors.LocalEntryNotFoundError as err:  # offline (or unreachable) and not in the cache
        cached = try_to_load_from_cache(repo_id, name)
        if cached is not None and not isinstance(cached, str):  # the cache remembers the hub saying "no such file"
            return None
        reason = (
            "the hub cannot be reached (or HF_HUB_OFFLINE is set) and the file is not in the local Hugging Face "
            f"cache: {err}"
        )
    except errors.GatedRepoError as err:
        reason = (
            "the model is gated on the Hugging Face hub and no token with access was given (set hf_token_secret "
            f"to a Secret Manager secret holding one): {err}"
        )
    except errors.RepositoryNotFoundError as err:
        reason = f"no such model on the Hugging Face hub (or it is private and the token has no access): {err}"
    except (errors.HfHubHTTPError, OSError, ValueError) as err:
        reason = f"{type(err).__name__}: {err}"
    raise ModelLoadError(f"model {model!r}: could not read {name} from the Hugging Face hub: {reason}")


def model_prompts(model: str) -> dict[str, str]:
    """The model's named prompts (`config_sentence_transformers.json`), without loading the model.

    A model without that file, or whose file names no prompts, has none ({}): that is legitimate. A file
    that cannot be read or parsed is an error, so that documents are never embedded without the prompt
    search adds to queries.

    Raises:
        ModelLoadError: naming the model and the reason: the folder does not exist or is not a model
            folder, the file cannot be read (gs:// or hub error, gated model, offline without a cache), or
            it is not a JSON object whose "prompts" map names to strings.
    """
    name = "config_sentence_transformers.json"
    data = read_model_file(model, name)
    if data is None:
        return {}
    try:
        config = json.loads(data)
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise ModelLoadError(f"model {model!r}: {name} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"model {model!r}: {name} is not valid JSON: expected an object, got {type(config).__name__}"
        )
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelLoadError(f"model {model!r}: {name}: 'prompts' must map prompt names to strings, got {prompts!r}")
    return {str(k): v for k, v in prompts.items()}


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
