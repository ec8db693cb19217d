"""Vertex AI's own text embedding model ids, answered with the open models that replace them.

A Vertex user's request names a Vertex model as the base model (`textembedding-gecko@002`,
`text-embedding-005`, ...). Those models run only inside Vertex AI; embedpipe tunes open
sentence-transformers models. Taken for a Hugging Face id, such a name would fail late, in the first task
that loads a model, with a hub error; `check_open_model` answers it before any work, naming the
replacement. It is called wherever a base model reference enters: the pipeline's first task
(`prepare_data`), `FineTuneSettings`, the CLI, `embedpipe submit`, and `models.resolve_model_path`.

Example:
    >>> check_open_model("google/embeddinggemma-300m")
    'google/embeddinggemma-300m'
    >>> vertex_model_message("textembedding-gecko@003").split(";")[0]
    "'textembedding-gecko@003' is a Vertex AI model, which runs only inside Vertex AI"
"""

from __future__ import annotations

import re

#: Open replacement of Vertex's English text embedding models (the cloud pipeline's default base model).
OPEN_MODEL = "google/embeddinggemma-300m"
#: Open replacements of Vertex's multilingual ones: EmbeddingGemma (trained on 100+ languages) and BGE-M3.
OPEN_MULTILINGUAL_MODELS = ("google/embeddinggemma-300m", "BAAI/bge-m3")

# textembedding-gecko@001..003, textembedding-gecko-multilingual@001, text-embedding-004/005,
# text-multilingual-embedding-002, their preview ids and gemini-embedding-001; bare, or as a Vertex
# publisher model name (publishers/google/models/<id>, optionally under projects/<p>/locations/<l>/).
_VERTEX_MODEL = re.compile(
    r"^(?:(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/)?"
    r"(?P<id>textembedding-gecko(?P<gecko_multilingual>-multilingual)?(?:@[\w.-]+)?"
    r"|text-embedding-(?:\d{3}|preview-\d{4})"
    r"|text-(?P<multilingual>multilingual)-embedding-(?:\d{3}|preview-\d{4})"
    r"|(?P<gemini>gemini-embedding)-[\w.-]+)$",
    re.IGNORECASE,
)


class VertexModelError(ValueError):
    """A Vertex AI model id was given where embedpipe needs an open model."""


def vertex_model_message(model: str) -> str | None:
    """Says why a Vertex AI model id cannot be tuned here and which open model replaces it.

    Args:
        model: A model reference as the user gave it.

    Returns:
        The message, or None when `model` is not a Vertex AI model id.
    """
    match = _VERTEX_MODEL.match((model or "").strip())
    if not match:
        return None
    multilingual = match["gecko_multilingual"] or match["multilingual"] or match["gemini"]
    if multilingual:
        first, second = OPEN_MULTILINGUAL_MODELS
        replacement = f"{first} (trained on 100+ languages) or {second} (multilingual)"
    else:
        replacement = f"{OPEN_MODEL} (embedpipe's cloud default)"
    return (
        f"{model.strip()!r} is a Vertex AI model, which runs only inside Vertex AI; embedpipe tunes open "
        f"sentence-transformers models. Use {replacement}, or any sentence-transformers model: a Hugging Face "
        "id, a local or gs:// folder, or 'default' for the packaged all-MiniLM-L6-v2"
    )


def check_open_model(model: str, *, parameter: str = "base_model_version_id") -> str:
    """Returns `model` unchanged, or raises when it is a Vertex AI model id.

    Args:
        model: A model reference as the user gave it.
        parameter: The parameter or flag it came in, for the message.

    Raises:
        VertexModelError: naming the parameter and the open models that replace the Vertex one.
    """
    message = vertex_model_message(model)
    if message:
        raise VertexModelError(f"{parameter}: {message}")
    return model
