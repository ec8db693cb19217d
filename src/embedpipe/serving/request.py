"""The request side of the endpoint: what Vertex's text-embedding `predict` accepts, checked and formatted.

`parse_request` turns a body into a `PredictRequest` (the texts with their task types' prompts, the
billable characters, the parameters) or raises `PredictError`, whose message names the instance and the
field; the app answers it with a 400.

Example:
    >>> from embedpipe.prompts import resolve_prompts
    >>> request = parse_request(
    ...     {"instances": [{"content": "hello world", "task_type": "DEFAULT", "title": ""}]},
    ...     dimension=384,
    ...     prompts=lambda task_type: resolve_prompts(task_type, {}),
    ... )
    >>> request.texts, request.billable_characters, request.auto_truncate
    (['hello world'], 10, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedpipe.prompts import TASK_TYPES, Prompts, check_task_type
from embedpipe.serving.limits import ServingLimits

#: Most instances one request may carry by default (textembedding-gecko's limit; `ServingLimits`).
MAX_INSTANCES = ServingLimits().max_instances
DEFAULT_TASK_TYPE = "RETRIEVAL_QUERY"


class PredictError(ValueError):
    """A request the endpoint refuses (answered with HTTP 400)."""


@dataclass(frozen=True)
class PredictRequest:
    """A checked request body.

    Attributes:
        texts: Each instance's text with its task type's prompt (and title), as the model embeds it.
        billable_characters: `billable_characters` of the instances' `content`, summed.
        auto_truncate: `parameters.autoTruncate` (default true).
        output_dimensionality: `parameters.outputDimensionality`, or None for the model's own.
    """

    texts: list[str]
    billable_characters: int
    auto_truncate: bool = True
    output_dimensionality: int | None = None


def billable_characters(text: str) -> int:
    """Characters as Vertex AI bills them: Unicode code points, white space excluded.

    Example:
        >>> billable_characters("hello world")
        10
    """
    return sum(1 for char in text if not char.isspace())


def parse_request(
    body, *, dimension: int, prompts: Callable[[str], Prompts], limits: ServingLimits | None = None
) -> PredictRequest:
    """Checks a gecko-style request body, as Vertex's text-embedding `predict` accepts it.

    Args:
        body: The parsed JSON body: `{"instances": [{"content", "task_type"?, "title"?}], "parameters"?}`.
        dimension: The model's embedding dimension (the most `outputDimensionality` may ask for).
        prompts: The prompts of a task type (upper-cased, one `embedpipe.prompts` knows) for this model.
        limits: Most instances and characters per instance (default: `ServingLimits()`), checked before any
            text is formatted.

    Returns:
        The PredictRequest.

    Raises:
        PredictError: naming the instance and field (or the parameter) that is wrong and what would be right.
    """
    if not isinstance(body, dict):
        raise PredictError('the request body must be a JSON object like {"instances": [{"content": "..."}]}')
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise PredictError("'instances' must be a non-empty list of objects with a 'content' string")
    limits = limits or ServingLimits()
    if len(instances) > limits.max_instances:
        raise PredictError(f"too many instances: {len(instances)}; at most {limits.max_instances} per request")
    auto_truncate, output_dimensionality = _parameters(body.get("parameters"), dimension)
    texts, characters = [], 0
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise PredictError(f"instances[{i}] must be an object with a 'content' string")
        content = instance.get("content")
        if not isinstance(content, str) or not content.strip():
            raise PredictError(f"instances[{i}].content must be a non-empty string")
        task_type = _task_type(instance.get("task_type"), i)
        title = instance.get("title")
        if title is not None and not isinstance(title, str):
            raise PredictError(f"instances[{i}].title must be a string, got {type(title).__name__}")
        for name, text in (("content", content), ("title", title or "")):
            if len(text) > limits.max_characters:
                raise PredictError(
                    f"instances[{i}].{name} is {len(text)} characters, more than the {limits.max_characters} "
                    "one instance may have; split the text"
                )
        title = (title or "").strip()
        if title and task_type != "RETRIEVAL_DOCUMENT":
            raise PredictError(
                f"instances[{i}].title is only valid with task_type RETRIEVAL_DOCUMENT (this instance's task_type "
                f"is {task_type}); leave it out or send an empty title"
            )
        for name, text in (("content", content), ("title", title)):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise PredictError(f"instances[{i}].{name} is not valid Unicode: {err.reason}") from None
        selected = prompts(task_type)
        if task_type == "RETRIEVAL_DOCUMENT":
            texts.append(selected.format_documents([content], [title])[0])
        else:
            texts.append(selected.format_queries([content])[0])
        characters += billable_characters(content)
    return PredictRequest(texts, characters, auto_truncate, output_dimensionality)


def _task_type(task_type, index: int) -> str:
    if task_type is None or task_type == "":  # Vertex: "If left blank, the default used is RETRIEVAL_QUERY"
        return DEFAULT_TASK_TYPE
    expected = f"expected one of {', '.join(TASK_TYPES)}"
    if not isinstance(task_type, str):
        raise PredictError(f"instances[{index}].task_type must be a string; {expected}")
    try:
        return check_task_type(task_type)
    except ValueError:
        raise PredictError(f"instances[{index}].task_type {_shown(task_type)} is unknown; {expected}") from None


def _parameters(parameters, dimension: int) -> tuple[bool, int | None]:
    if parameters is None:
        return True, None
    if not isinstance(parameters, dict):
        raise PredictError(
            '\'parameters\' must be a JSON object like {"autoTruncate": true, "outputDimensionality": 256}'
        )
    auto_truncate = parameters.get("autoTruncate")
    if auto_truncate is None:
        auto_truncate = True
    if not isinstance(auto_truncate, bool):
        raise PredictError(f"parameters.autoTruncate must be true or false, got {_shown(auto_truncate)}")
    size = parameters.get("outputDimensionality")
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= dimension):
        raise PredictError(
            f"parameters.outputDimensionality must be an integer from 1 to {dimension} (the model's dimension), "
            f"got {_shown(size)}"
        )
    return auto_truncate, size


def _shown(value, limit: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut short (a 4000-digit number is not echoed)."""
    if isinstance(value, int) and value.bit_length() > 3 * limit:  # str() of a huge int is slow, or refused
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
