"""What a user of Vertex AI's `tune-text-embedding-model` template sends, in embedpipe's terms.

The one place that decides how Vertex's parameter names map onto ours, used by the pipeline (through
`FineTuneSettings`, in the fine-tune task), by `embedpipe submit` and by the CLI:

- `iterations` is the template's name for the step count up to v1.1.2; v1.1.3 renamed it `train_steps`.
  Both are pipeline parameters; `resolve_train_steps` picks one (`train_steps` wins when both are given).
- `machine_type` is the template's training machine; our fine-tune task asks Vertex for vCPUs, memory and
  GPUs instead, and `training_resources` turns a machine type into those.
- `DATASET_LIMITS` are the dataset sizes Vertex documents for tuning (`prepare_data` checks them).

Source of the limits and of the parameter names: Vertex AI, "Tune text embeddings"
(https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-embeddings, section "Dataset size
requirements", and its REST and client-library samples of template versions v1.1.1 to v1.1.4).

Example:
    >>> resolve_train_steps(train_steps=0, iterations=1000)
    1000
    >>> resolve_train_steps(train_steps=500, iterations=0)
    500
    >>> training_resources("n1-standard-16")
    ('16', '60G')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Vertex AI's page on tuning text embeddings: dataset format, dataset size requirements, parameters.
TUNING_DOCS_URL = "https://cloud.google.com/vertex-ai/generative-ai/docs/models/tune-embeddings"
#: Vertex parameter -> the embedpipe parameter it is another name for.
PARAMETER_ALIASES = {"iterations": "train_steps"}


@dataclass(frozen=True)
class DatasetLimits:
    """Vertex AI's documented dataset size requirements for tuning a text embedding model.

    Attributes:
        min_queries: Fewest queries in the queries file.
        max_queries: Most queries in the queries file.
        min_documents: Fewest documents in the corpus.
        max_documents: Most documents in the corpus.
        min_queries_per_label_file: Fewest distinct query ids in each label file.
        min_labelled_queries: Fewest distinct query ids across all label files (splits).
        max_labels: Most labels (lines) across all label files ("less than 500,000").
    """

    min_queries: int = 9
    max_queries: int = 10_000
    min_documents: int = 9
    max_documents: int = 500_000
    min_queries_per_label_file: int = 3
    min_labelled_queries: int = 9
    max_labels: int = 499_999


#: The limits as Vertex documents them (TUNING_DOCS_URL, "Dataset size requirements").
DATASET_LIMITS = DatasetLimits()


def _given(value) -> int | None:
    if value is None or value == "":
        return None
    number = int(value)
    return number if number != 0 else None


def resolve_train_steps(train_steps: int | None = None, iterations: int | None = None, *, default: int = 1000) -> int:
    """The number of optimiser steps from Vertex's two names for it.

    Args:
        train_steps: Vertex's name since template v1.1.3; None or 0 = not given.
        iterations: Vertex's name up to v1.1.2; None or 0 = not given.
        default: The steps when neither is given.

    Returns:
        `train_steps` when given (it wins over `iterations`, with a logged warning when they differ), else
        `iterations`, else `default`. Not range-checked: the caller says what is allowed.
    """
    steps, older = _given(train_steps), _given(iterations)
    if steps is not None and older is not None and steps != older:
        logger.warning(
            "train_steps=%d and iterations=%d both given: train_steps wins (iterations is its name before "
            "Vertex template v1.1.3)",
            steps,
            older,
        )
    if steps is not None:
        return steps
    return older if older is not None else int(default)


# Compute Engine machine shapes: GB of memory per vCPU by series and kind ("n1" differs from the rest).
_MEMORY_PER_CPU = {("n1", "standard"): 3.75, ("n1", "highmem"): 6.5, ("n1", "highcpu"): 0.9}
_MEMORY_PER_CPU_OTHER = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0}
# GPU machines named by their GPU count: (vCPUs, GB) per GPU.
_PER_GPU = {("a2", "highgpu"): (12, 85), ("a2", "ultragpu"): (12, 170), ("a3", "highgpu"): (26, 234)}
_MACHINE_TYPE = re.compile(r"^(?P<series>[a-z]\d[a-z]?)-(?P<kind>[a-z]+)-(?P<count>\d+)(?P<gpus>g?)$")


def training_resources(machine_type: str) -> tuple[str, str]:
    """The vCPUs and memory of a Compute Engine machine type, as the fine-tune task's limits.

    Vertex chooses the fine-tune task's machine from the vCPUs, memory and GPUs it asks for; these are
    the ones of `machine_type`, so Vertex chooses that machine (or the smallest one that fits them with the
    requested GPU).

    Args:
        machine_type: e.g. "n1-standard-16", "g2-standard-8", "a2-highgpu-1g".

    Returns:
        (`training_cpu_limit`, `training_memory_limit`), e.g. ("16", "60G").

    Raises:
        ValueError: naming `machine_type` and the shapes understood, for any other name.
    """
    match = _MACHINE_TYPE.match((machine_type or "").strip().lower())
    if match:
        series, kind, count = match["series"], match["kind"], int(match["count"])
        if match["gpus"] and (series, kind) in _PER_GPU:
            cpus, memory = _PER_GPU[series, kind]
            return str(cpus * count), f"{memory * count}G"
        per_cpu = _MEMORY_PER_CPU.get((series, kind), _MEMORY_PER_CPU_OTHER.get(kind))
        if per_cpu and not match["gpus"] and count > 0:
            return str(count), f"{int(per_cpu * count)}G"
    raise ValueError(
        f"machine_type {machine_type!r} is not a machine type embedpipe can size: give <series>-standard|highmem|"
        "highcpu-<vCPUs> (n1-standard-16, g2-standard-8, ...) or a2-highgpu-<N>g / a2-ultragpu-<N>g / "
        "a3-highgpu-<N>g, or leave machine_type empty and set training_cpu_limit and training_memory_limit"
    )
