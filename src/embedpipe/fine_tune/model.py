"""The base model of a run: loaded through `embedpipe.models`, and the tuned model saved."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedpipe.fine_tune.distributed import process_device
from embedpipe.fine_tune.settings import (
    CHECKPOINTS_DIR,
    FineTuneError,
    FineTuneSettings,
)
from embedpipe.models import embedding_dimension


@dataclass(frozen=True)
class BaseModel:
    """The loaded base model and where it came from.

    Attributes:
        model: The SentenceTransformer; training updates it in place.
        name: The reference it was asked for by (`FineTuneSettings.base_model`).
        path: The local folder or hub id it was loaded from.
        device: The device it was loaded on.
        dimension: Its embedding size.
    """

    model: Any
    name: str
    path: str
    device: str
    dimension: int


def load_base_model(settings: FineTuneSettings, *, gcs_client=None, model_path: str = "") -> BaseModel:
    """Loads `settings.base_model` on `settings.device` (default: CUDA when there is one; in a process of a
    distributed run, its own GPU).

    Args:
        settings: The run's settings (`base_model`, `device`, `max_seq_length`, `hf_token_secret`).
        gcs_client: Storage client (or fake) for a `gs://` base model.
        model_path: Where `settings.base_model` was already resolved to (by the launcher of a distributed
            run); "" resolves it here.

    Returns:
        A BaseModel, with `max_seq_length` applied.

    Raises:
        embedpipe.models.ModelLoadError: when the model is missing or cannot be loaded.
        FineTuneError: when the folder is a model but not a sentence-transformers one.
    """
    from sentence_transformers import SentenceTransformer

    from embedpipe.models import ModelLoadError, default_device, resolve_model_path, use_hf_token

    # resolve_model_path checks a local or gs:// folder with models.check_model_folder.
    model_path = model_path or resolve_model_path(settings.base_model, gcs_client=gcs_client)
    _require_modules_json(model_path, settings.base_model)
    device = process_device(settings.device or default_device())
    try:
        with use_hf_token(settings.hf_token_secret):  # a gated hub model: its token for this load only
            model = SentenceTransformer(model_path, device=device)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load base model {settings.base_model!r} from {model_path}: {err}") from err
    if settings.max_seq_length:
        model.max_seq_length = settings.max_seq_length
    return BaseModel(model, settings.base_model, model_path, device, int(embedding_dimension(model)))


def _require_modules_json(path: str, shown: str) -> None:
    # models.check_model_folder also accepts a plain transformers folder (config.json only); training
    # needs a sentence-transformers one, whose modules.json says how to pool and normalise.
    folder = Path(path)
    if folder.is_dir() and not (folder / "modules.json").is_file():
        raise FineTuneError(
            f"base model {shown} is not a sentence-transformers model: {path} has no modules.json. "
            "Give a sentence-transformers folder (model.save(...)) or a hub id such as google/embeddinggemma-300m"
        )


def output_dimension(base: BaseModel, requested: int) -> int:
    """The embedding size to train for: `requested`, or 0 for the base model's own (no MatryoshkaLoss).

    Raises:
        FineTuneError: when `requested` is larger than the base model's dimension.
    """
    full = base.dimension
    if requested > full:
        raise FineTuneError(
            f"output_dimensionality={requested} is larger than the dimension {full} "
            f"of {base.name}; give at most {full} (0 = {full})"
        )
    return 0 if requested == full else requested


def save_model(base: BaseModel, output: Path, dimension: int, *, keep_checkpoints: bool = False) -> None:
    """Saves the tuned model to `output` (safetensors), truncated to `dimension` when it is not 0.

    Args:
        base: The base model, trained in place.
        output: The output folder.
        dimension: `output_dimension(...)`: 0 saves the model as it is.
        keep_checkpoints: Keep `<output>/checkpoints` (default: delete it).
    """
    from sentence_transformers import SentenceTransformer

    model = base.model
    final = model
    if dimension:
        final = SentenceTransformer(modules=_truncating_modules(model, dimension), device=base.device)
        final.prompts = dict(model.prompts)
        final.default_prompt_name = model.default_prompt_name
    final.save(str(output), safe_serialization=True, create_model_card=False)
    if not keep_checkpoints:
        shutil.rmtree(output / CHECKPOINTS_DIR, ignore_errors=True)


def _truncating_modules(model, dimension: int):
    """The model's modules with a fixed truncation to `dimension` inserted before its Normalize (if any).

    Trained with MatryoshkaLoss, the first `dimension` values are a good embedding on their own; the
    saved model then returns them from `SentenceTransformer(path).encode(...)` like any other model.
    """
    import torch
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize

    modules = list(model._modules.values())
    full = int(embedding_dimension(model))
    trailing_normalize = isinstance(modules[-1], Normalize)
    body = modules[:-1] if trailing_normalize else modules
    identity = torch.eye(full)[:dimension].clone()
    truncate = Dense(full, dimension, bias=False, activation_function=None, init_weight=identity)
    truncate.linear.weight.requires_grad_(False)
    return body + [truncate] + ([Normalize()] if trailing_normalize else [])
