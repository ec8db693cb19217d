"""How much one request may ask of the endpoint: body size, instances, characters, and how long it may wait.

One settings object, `ServingLimits`, holds the four bounds; each field names its environment variable and
its `embedpipe serve` flag, so the option is declared once. The defaults fit every request Vertex AI itself
accepts for its text-embedding models:

- body: Vertex's online prediction payload limit is 1.5 MB ("the service itself will accept instances up
  to the payload limit size (currently, 1.5MB)", `gcloud ai endpoints predict`); we take 1.5 MiB, a little
  more, so a body Vertex forwards is never refused here.
- instances: "each request is limited to 250 input texts" (Vertex AI, "Get text embeddings", API limits).
- characters: the same page limits a request to 20,000 input tokens (more is a 400) and truncates each
  text at 2,048 tokens; 20,000 tokens are about 80,000 characters of English, so 100,000 characters per
  instance hold any text Vertex accepts, and a multi-megabyte text is refused before any tokenizing.
- deadline: ours (Vertex documents none for custom containers); a request not answered within it gets a 504.

Example:
    >>> limits = ServingLimits.from_env({"max_instances": 10}, environ={"EMBEDPIPE_SERVING_DEADLINE_S": "5"})
    >>> limits.max_instances, limits.deadline_s, limits.max_body_bytes
    (10, 5.0, 1572864)
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace


def _limit(default, env: str, flag: str, help: str):
    return field(default=default, metadata={"env": env, "flag": flag, "help": help})


@dataclass(frozen=True)
class ServingLimits:
    """Bounds on one request, checked before any parsing or tokenizing work that depends on them.

    Attributes:
        max_body_bytes: Largest request body in bytes (more is a 413, answered before the JSON is parsed).
        max_instances: Most instances per request (more is a 400).
        max_characters: Most characters in one instance's `content` or `title` (more is a 400 naming it).
        deadline_s: Seconds a request may take, waiting for the model included (longer is a 504).
    """

    max_body_bytes: int = _limit(
        1_572_864, "EMBEDPIPE_SERVING_MAX_BODY_BYTES", "--max-body-bytes", "largest request body in bytes"
    )
    max_instances: int = _limit(
        250, "EMBEDPIPE_SERVING_MAX_INSTANCES", "--max-instances", "most instances per request"
    )
    max_characters: int = _limit(
        100_000, "EMBEDPIPE_SERVING_MAX_CHARACTERS", "--max-characters", "most characters per instance"
    )
    deadline_s: float = _limit(
        30.0, "EMBEDPIPE_SERVING_DEADLINE_S", "--deadline-s", "seconds a request may wait for its answer"
    )

    def __post_init__(self):
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(
                    f"{spec.name} ({spec.metadata['flag']}, ${spec.metadata['env']}) must be a positive finite number, got {value!r}"
                )

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, object] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> ServingLimits:
        """The limits from `overrides` (flags; None values ignored), else the environment, else the defaults.

        Raises:
            ValueError: naming the variable whose value is not a positive number.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for spec in fields(cls):
            value = (overrides or {}).get(spec.name)
            if value is None and environ.get(spec.metadata["env"], "").strip():
                raw = environ[spec.metadata["env"]].strip()
                try:
                    value = int(raw) if spec.type == "int" else float(raw)
                except ValueError:
                    raise ValueError(f"{spec.metadata['env']} must be a positive number, got {raw!r}") from None
            if value is not None:
                values[spec.name] = value
        return replace(cls(), **values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one flag per limit (default None: the environment variable, else the default, decides)."""
        for spec in fields(cls):
            parser.add_argument(
                spec.metadata["flag"],
                dest=spec.name,
                type=int if spec.type == "int" else float,
                help=f"{spec.metadata['help']} (default: ${spec.metadata['env']} or {spec.default})",
            )

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> ServingLimits:
        """The limits from parsed flags (`add_arguments`), the environment and the defaults."""
        return cls.from_env({spec.name: getattr(args, spec.name, None) for spec in fields(cls)})
