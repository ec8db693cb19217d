"""Task types and the prompts they select: the one place that decides how text is put to a model.

Training, evaluation, the Beam embedding job and the serving endpoint all format text through
`resolve_prompts(task_type, model.prompts)`, so a query is embedded the same way everywhere.

The task types are those of Vertex AI's text embedding models. A model's own named prompts are used
where it has them (EmbeddingGemma ships `query`, `document`, `STS`, `Clustering`, ...); models without
prompts (all-MiniLM-L6-v2) get none, and documents are embedded as `"{title} {text}"` as MTEB/BEIR do.

`DEFAULT` (the task type of Vertex's tuning samples) asks for no task-specific instruction: queries get the
model's own default `query` prompt and documents its `document` prompt, the two that sentence-transformers'
`encode_query` / `encode_document` use; a model without them gets none. It is asymmetric, like retrieval:
for EmbeddingGemma that is `task: search result | query: ` and `title: {title} | text: `, the same
prompts as RETRIEVAL_QUERY / RETRIEVAL_DOCUMENT; it never picks a task prompt (`QuestionAnswering`, `STS`, ...).

Example:
    >>> p = resolve_prompts("RETRIEVAL_QUERY", {"query": "task: search result | query: ",
    ...                                          "document": "title: none | text: "})
    >>> p.format_queries(["what is pgvector?"])
    ['task: search result | query: what is pgvector?']
    >>> p.format_documents(["An extension."], titles=["pgvector"])
    ['title: pgvector | text: An extension.']
    >>> resolve_prompts("RETRIEVAL_QUERY", {}).format_documents(["An extension."], titles=["pgvector"])
    ['pgvector An extension.']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

TASK_TYPES = (
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
    "DEFAULT",
)

#: Task types whose two sides are asymmetric (a query against documents).
RETRIEVAL_TASKS = (
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
    "DEFAULT",
)

# Query-side prompt names tried in order on the model's prompts; then the EmbeddingGemma-style template.
_QUERY_PROMPT_NAMES = {
    "RETRIEVAL_QUERY": ("query", "Retrieval-query", "Retrieval"),
    "RETRIEVAL_DOCUMENT": ("query", "Retrieval-query", "Retrieval"),
    "QUESTION_ANSWERING": ("QuestionAnswering", "question_answering"),
    "FACT_VERIFICATION": ("FactVerification", "fact_checking"),
    "CODE_RETRIEVAL_QUERY": ("CodeRetrieval", "InstructionRetrieval"),
    "SEMANTIC_SIMILARITY": ("STS", "PairClassification"),
    "CLASSIFICATION": ("Classification",),
    "CLUSTERING": ("Clustering",),
    "DEFAULT": ("query",),  # the model's default query prompt, no task-specific one
}
_DOCUMENT_PROMPT_NAMES = ("document", "Retrieval-document")
_GEMMA_TASK_NAMES = {
    "RETRIEVAL_QUERY": "search result",
    "RETRIEVAL_DOCUMENT": "search result",
    "QUESTION_ANSWERING": "question answering",
    "FACT_VERIFICATION": "fact checking",
    "CODE_RETRIEVAL_QUERY": "code retrieval",
    "SEMANTIC_SIMILARITY": "sentence similarity",
    "CLASSIFICATION": "classification",
    "CLUSTERING": "clustering",
    "DEFAULT": "search result",  # unused: DEFAULT takes the model's `query` prompt, or none
}
_GEMMA_QUERY_PREFIX = "task: "
_TITLE_PLACEHOLDER = "title: none"


def check_task_type(task_type: str) -> str:
    """Returns the task type upper-cased, or raises ValueError naming the valid ones."""
    normalized = (task_type or "").strip().upper()
    if normalized not in TASK_TYPES:
        raise ValueError(f"unknown task_type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
    return normalized


@dataclass(frozen=True)
class Prompts:
    """The prompts one task type selects for one model.

    Attributes:
        task_type: One of TASK_TYPES.
        query: Prefix for the query side ("" for none).
        document: Prefix for the document side ("" for none). A prefix containing `title: none`
            (EmbeddingGemma) has the document's title put in place of `none`.
    """

    task_type: str
    query: str
    document: str

    def format_queries(self, texts: Sequence[str]) -> list[str]:
        return [self.query + text for text in texts]

    def format_documents(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> list[str]:
        titles = titles if titles is not None else [""] * len(texts)
        if _TITLE_PLACEHOLDER in self.document:
            return [
                self.document.replace(_TITLE_PLACEHOLDER, f"title: {(title or '').strip() or 'none'}") + text
                for text, title in zip(texts, titles)
            ]
        return [self.document + f"{(title or '').strip()} {text}".strip() for text, title in zip(texts, titles)]

    def format(self, texts: Sequence[str], titles: Sequence[str] | None = None, *, side: str) -> list[str]:
        """Formats texts for one side, `"query"` or `"document"`."""
        if side == "query":
            return self.format_queries(texts)
        if side == "document":
            return self.format_documents(texts, titles)
        raise ValueError(f"side must be 'query' or 'document', got {side!r}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_prompts(task_type: str, model_prompts: Mapping[str, str] | None) -> Prompts:
    """Chooses the query and document prompts of a task type from a model's own prompts.

    Args:
        task_type: One of TASK_TYPES (case-insensitive).
        model_prompts: `SentenceTransformer.prompts` of the model ({} or None for a model without prompts).

    Returns:
        Prompts for that task type and model.
    """
    task_type = check_task_type(task_type)
    prompts = {k: v for k, v in (model_prompts or {}).items() if v}
    query = next((prompts[name] for name in _QUERY_PROMPT_NAMES[task_type] if name in prompts), None)
    if query is None:
        base = prompts.get("query", "")
        # EmbeddingGemma-style models name the task inside the prompt: "task: <name> | query: ".
        query = f"task: {_GEMMA_TASK_NAMES[task_type]} | query: " if base.startswith(_GEMMA_QUERY_PREFIX) else ""
    if task_type in RETRIEVAL_TASKS:
        document = next((prompts[name] for name in _DOCUMENT_PROMPT_NAMES if name in prompts), "")
    else:
        document = query  # symmetric tasks embed both sides alike
    return Prompts(task_type, query, document)
