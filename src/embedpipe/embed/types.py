"""The typed elements that flow between the embedding job's stages, never mutated in place.

    corpus record ─parse─> Document | DeadLetter
    Pub/Sub message ─parse─> Change | DeadLetter ─LatestWins─> Document + Version  (streaming job)
    Document ─Decide─> DocumentToEmbed (new or changed) | VectorRow (unchanged: carried over) | stale id
    DocumentToEmbed ─ToItems─> EmbedItem (the document, or each of its chunks)
    EmbedItem ─RunInference─> VectorRow ─> Parquet shard and/or the vector store

Every stage states what it takes and gives with these frozen dataclasses (the way Beam's `ml.rag.types`
does), so a DoFn cannot change an element another stage still holds. `VectorRow.to_dict()` gives the
columns of `embedpipe.vectorstore.vectors_schema(content_hash=True)`, what the Parquet shards hold.

Example:
    >>> doc = Document(id="d1", text="Some text.", title="T")
    >>> doc.metadata
    {}
    >>> VectorRow(id="d1", embedding=[1.0], content="Some text.", metadata="{}", content_hash="ab").to_dict()["id"]
    'd1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One corpus document, checked: a non-empty id and text, a title ("" when none), metadata (a dict)."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text, "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class DeadLetter:
    """A record the job could not embed, with why; `record` is a short excerpt of it, `source` its file:line."""

    id: str | None
    reason: str
    record: str
    source: str = ""  # "file:line" where the job read it line by line ("" otherwise)

    def to_dict(self) -> dict:
        where = {"source": self.source} if self.source else {}
        return {"id": self.id, "reason": self.reason, "record": self.record, **where}


@dataclass(frozen=True)
class Change:
    """One Pub/Sub message of the streaming job, parsed: an upsert of `document`, or a delete of `id`.

    Attributes:
        id: The document id.
        delete: Whether the document is removed.
        document: The new version (None for a delete).
        order: Sorts the versions of one document, the newest last
            (`embedpipe.embed.streaming.messages`).
    """

    id: str
    delete: bool
    document: Document | None
    order: tuple


@dataclass(frozen=True)
class Version:
    """The version of a document that won its window: travels to the database write beside its rows.

    Attributes:
        id: The document id.
        order: The winning change's `order`.
        content_hash: The content hash its rows carry (None for a delete).
    """

    id: str
    order: tuple
    content_hash: str | None


@dataclass(frozen=True)
class DocumentToEmbed:
    """A new or changed document, as `Decide` leaves it for embedding.

    Attributes:
        document: The document.
        formatted: Its text as the model sees it (title and the task type's document prompt applied).
        content_hash: `documents.content_hash` of it: what its vector rows carry.
        previous_ids: The ids of its rows in the previous run (rows the new ones may not replace are stale).
    """

    document: Document
    formatted: str
    content_hash: str
    previous_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmbedItem:
    """One text to embed: a document or a chunk of one (`docid#n`), with the row it will become.

    Attributes:
        id: The vector row's id.
        input: The formatted text the model embeds.
        content: The text stored beside the vector.
        metadata: JSON text of the row's metadata.
        content_hash: The document's content hash.
    """

    id: str
    input: str
    content: str
    metadata: str
    content_hash: str


@dataclass(frozen=True)
class VectorRow:
    """One row of the vector store and of the vectors Parquet shards."""

    id: str
    embedding: Sequence[float]
    content: str | None
    metadata: str | None
    content_hash: str | None = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> VectorRow:
        """A row read back from a Parquet shard (extra columns ignored)."""
        return cls(row["id"], row["embedding"], row.get("content"), row.get("metadata"), row.get("content_hash"))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "embedding": self.embedding,
            "content": self.content,
            "metadata": self.metadata,
            "content_hash": self.content_hash,
        }
