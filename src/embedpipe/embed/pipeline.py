"""The Beam pipeline of the embedding job: read, check, (chunk), embed or carry over, write.

    corpus (JSONL | Parquet) ─ParseDocuments─┬─ dead letters ───────────────────────────┐
                                             └─ (id, doc) ─┐                             │
    previous vectors (Parquet) ─ (doc id, rows) ───────────┴─ CoGroupByKey ─ Decide ─┬─ dead letters (repeated ids)
                                                                                     ├─ reused rows ─────────┐
                                                                                     ├─ stale ids (removed docs / chunks) ─ (database delete)
                                                                                     └─ docs ─ Chunk ─ RunInference ─ rows ─ Parquet shards (+ database upsert)

`build_pipeline(pipeline, config)` adds these transforms to a `beam.Pipeline`; `embedpipe.embed.job` runs it.
Counts go to Beam metrics in the `embedpipe` namespace (METRIC_NAMES).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from embedpipe.extras import optional_imports

with optional_imports("dataflow", "the Beam embedding job"):  # a missing Beam: the pip line, not a traceback
    import apache_beam as beam

from embedpipe.embed import documents as docs
from embedpipe.embed.runtime import counter
from embedpipe.embed.settings import DeadLetterLimits, ModelSettings
from embedpipe.embed.types import DocumentToEmbed, EmbedItem, VectorRow
from embedpipe.prompts import Prompts

METRIC_NAMES = (
    "documents_read",  # records read from the corpus, good or bad
    "documents_embedded",
    "chunks_embedded",  # vectors computed (= documents_embedded without chunking)
    "documents_reused",  # unchanged documents whose vectors were carried over from the previous run
    "vectors_reused",
    "documents_removed",  # in the previous run's output, no longer in the corpus
    "dead_letters",  # records that could not be embedded (see _dead_letters/ in the output)
)
VECTOR_SHARD_PREFIX = "vectors"
DEAD_LETTER_FOLDER = "_dead_letters"  # "_" so Parquet dataset readers of the output folder skip it


@dataclass(frozen=True)
class EmbedConfig:
    """What the job embeds and how; everything a worker needs, resolved on the launching machine.

    Attributes:
        input_pattern: File pattern of the corpus (local or gs://).
        input_format: "jsonl" or "parquet".
        output: Folder for the vector shards (local or gs://).
        model_settings: The model and how it runs (`ModelSettings`: batch sizes, output size, device,
            precision, backend, sharing across processes), passed whole to the ModelHandler.
        prompts: The task type's prompts for this model (documents use `prompts.document`).
        model_identity: Model fingerprint + backend + output size: part of every content hash.
        previous_pattern: The previous run's vector shards ("" = embed everything).
        chunk_tokens: Tokens per chunk (0 = one vector per document, truncated at the model's limit).
        chunk_overlap: Tokens shared by neighbouring chunks.
        num_shards: Vector shards to write (0 = the runner decides).
        database_uri: Postgres/pgvector URI to upsert the vectors into as well ("" = Parquet only);
            stale rows of the previous run are deleted there.
        table: The pgvector table.
        dead_letters: When the job fails for its dead letters; the vectors (Parquet and database) are held
            back until the counts are known, and written only when within these limits.
    """

    input_pattern: str
    input_format: str
    output: str
    model_settings: ModelSettings
    prompts: Prompts
    model_identity: str
    previous_pattern: str = ""
    chunk_tokens: int = 0
    chunk_overlap: int = 0
    num_shards: int = 0
    database_uri: str = ""
    table: str = "embeddings"
    dead_letters: DeadLetterLimits = field(default_factory=DeadLetterLimits)

    @property
    def model(self) -> str:
        """The model reference (`model_settings.model`)."""
        return self.model_settings.model

    @property
    def chunking(self) -> str:
        return f"chunk={self.chunk_tokens},overlap={self.chunk_overlap}" if self.chunk_tokens else ""

    def to_dict(self) -> dict:
        return asdict(self)


class ParseDocuments(beam.DoFn):
    """JSONL line (`(file:line, bytes)` from `reading.ReadJsonLines`, or text) or Parquet row -> `(id, document)`;
    bad records to the `dead` output."""

    def __init__(self, input_format: str):
        self._json = input_format == "jsonl"
        self._read = counter("documents_read")
        self._dead = counter("dead_letters")

    def process(self, record):
        source, record = record if self._json and isinstance(record, tuple) else ("", record)
        if self._json and not record.strip():
            return []  # blank line
        self._read.inc()
        doc = docs.parse_json_line(record, source) if self._json else docs.parse_record(record)
        if docs.is_dead_letter(doc):
            self._dead.inc()
            return [beam.pvalue.TaggedOutput("dead", doc)]
        return [(doc.id, doc)]


class Decide(beam.DoFn):
    """Per document id: repeated id -> dead letters; unchanged -> previous rows; else -> to embed.

    Takes `(id, {"doc": [Document], "previous": [VectorRow]})`; gives `DocumentToEmbed` (main), `VectorRow`
    ("reused"), `DeadLetter` ("dead") and stale row ids ("stale").
    """

    def __init__(self, prompts: Prompts, model_identity: str, chunking: str):
        self._prompts = prompts
        self._identity = model_identity
        self._chunking = chunking
        self._reused = counter("documents_reused")
        self._vectors_reused = counter("vectors_reused")
        self._removed = counter("documents_removed")
        self._dead = counter("dead_letters")

    def process(self, element):
        doc_id, grouped = element
        current = list(grouped["doc"])
        previous = list(grouped["previous"])
        if not current:
            if previous:
                self._removed.inc()
                for row in previous:  # gone from the corpus: gone from the vector store too
                    yield beam.pvalue.TaggedOutput("stale", row.id)
            return
        if len(current) > 1:
            self._dead.inc(len(current))
            for doc in current:
                reason = f"id {doc_id!r} appears {len(current)} times in the corpus; ids must be unique (none of its copies was embedded)"
                yield beam.pvalue.TaggedOutput("dead", docs.dead_letter(doc_id, reason, doc))
            return
        doc = current[0]
        formatted = self._prompts.format_documents([doc.text], [doc.title])[0]
        content_hash = docs.content_hash(formatted, self._identity, self._chunking)
        if previous and all(row.content_hash == content_hash for row in previous):
            self._reused.inc()
            self._vectors_reused.inc(len(previous))
            for row in previous:
                yield beam.pvalue.TaggedOutput("reused", row)
            return
        yield DocumentToEmbed(doc, formatted, content_hash, tuple(row.id for row in previous))


def _item(pending: DocumentToEmbed, *, id_: str, content: str, formatted: str, **extra) -> EmbedItem:
    return EmbedItem(id_, formatted, content, docs.document_metadata(pending.document, **extra), pending.content_hash)


class ToItems(beam.DoFn):
    """`DocumentToEmbed` -> `EmbedItem`s: the document itself, or its token chunks (`docid#n`); stale ids."""

    def __init__(self, config: EmbedConfig):
        self._config = config
        self._embedded = counter("documents_embedded")
        self._tokenizer = None

    def setup(self):
        if self._config.chunk_tokens:
            self._tokenizer = _SHARED_TOKENIZERS.acquire(
                lambda: _TokenizerBox(load_tokenizer(self._config.model)), tag=self._config.model
            ).tokenizer

    def process(self, pending: DocumentToEmbed):
        self._embedded.inc()
        doc = pending.document
        if not self._config.chunk_tokens:
            yield _item(pending, id_=doc.id, content=doc.text, formatted=pending.formatted)
            for stale in set(pending.previous_ids) - {doc.id}:
                yield beam.pvalue.TaggedOutput("stale", stale)
            return
        offsets = self._tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = docs.chunk_spans(offsets, self._config.chunk_tokens, self._config.chunk_overlap)
        prompts = self._config.prompts
        for index, (start, end) in enumerate(spans):
            text = doc.text[start:end]
            formatted = prompts.format_documents([text], [doc.title])[0]
            yield _item(
                pending,
                id_=docs.chunk_id(doc.id, index),
                content=text,
                formatted=formatted,
                document_id=doc.id,
                chunk=index,
            )
        # A changed document with fewer chunks than before: its last chunks' rows are stale.
        for stale in set(pending.previous_ids) - {docs.chunk_id(doc.id, i) for i in range(len(spans))}:
            yield beam.pvalue.TaggedOutput("stale", stale)


class _TokenizerBox:  # apache_beam.utils.shared needs a weak-referenceable object
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


def _shared_handle():
    from apache_beam.utils import shared

    return shared.Shared()


_SHARED_TOKENIZERS = _shared_handle()


def load_tokenizer(model: str):
    """The model's (fast) tokenizer, from the folder of its Transformer module."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from embedpipe.models import local_model_path

    path = Path(local_model_path(model))
    subfolder = ""
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer"):
                subfolder = module.get("path", "")
                break
    tokenizer = AutoTokenizer.from_pretrained(str(path / subfolder) if subfolder else str(path))
    tokenizer.model_max_length = 1 << 30  # long documents are what chunking is for: no length warning
    return tokenizer


def to_row(result) -> VectorRow:
    """RunInference's `PredictionResult` (an `EmbedItem` and its vector) -> the `VectorRow`."""
    item: EmbedItem = result.example
    return VectorRow(item.id, [float(x) for x in result.inference], item.content, item.metadata, item.content_hash)


class CountChunks(beam.DoFn):
    def __init__(self):
        self._chunks = counter("chunks_embedded")

    def process(self, row):
        self._chunks.inc()
        yield row


def read_corpus(pipeline, config: EmbedConfig):
    # validate=False: prepare_config has checked the files already, on the launching machine.
    if config.input_format == "parquet":
        return pipeline | "ReadCorpus" >> beam.io.ReadFromParquet(config.input_pattern, validate=False)
    from embedpipe.embed.reading import ReadJsonLines

    return pipeline | "ReadCorpus" >> ReadJsonLines(config.input_pattern)


def within_limits(records, dead, limits: DeadLetterLimits):
    """A singleton PCollection: True when the dead letters are within `limits` (known once all is read)."""
    from apache_beam.pvalue import AsSingleton

    count_records = records | "CountRecords" >> beam.combiners.Count.Globally()
    count_dead = dead | "CountDeadLetters" >> beam.combiners.Count.Globally()
    return (
        count_records.pipeline
        | "DeadLetterVerdict" >> beam.Create([None])
        | "WithinLimits"
        >> beam.Map(lambda _, n, d: not limits.exceeded(d, n), AsSingleton(count_records), AsSingleton(count_dead))
    )


def held_back(pcoll, verdict, label: str):
    """`pcoll`, passed on only once `verdict` says the job is within its dead-letter limits (else nothing)."""
    from apache_beam.pvalue import AsSingleton

    return pcoll | label >> beam.FlatMap(lambda element, ok: [element] if ok else [], AsSingleton(verdict))


def embed_documents(documents, config: EmbedConfig, previous=None):
    """The core transforms, shared by the batch job and the streaming job.

    Args:
        documents: PCollection of `(id, document)`.
        config: The job's configuration.
        previous: PCollection of previous vector rows (`VectorRow`), or None.

    Returns:
        (`VectorRow`s, `DeadLetter`s, stale ids) PCollections; stale ids are rows of the previous run that
        no longer exist (removed documents, chunks past a shortened document's end).
    """
    from apache_beam.ml.inference.base import RunInference

    from embedpipe.embed.handler import SentenceTransformerHandler

    pipeline = documents.pipeline
    if previous is None:
        previous = pipeline | "NoPreviousVectors" >> beam.Create([])
    keyed_previous = previous | "KeyPreviousByDocument" >> beam.Map(lambda row: (docs.document_id_of(row), row))
    decided = (
        {"doc": documents, "previous": keyed_previous}
        | "GroupById" >> beam.CoGroupByKey()
        | "Decide"
        >> beam.ParDo(Decide(config.prompts, config.model_identity, config.chunking)).with_outputs(
            "reused", "dead", "stale", main="embed"
        )
    )
    handler = SentenceTransformerHandler(config.model_settings)
    items = decided.embed | "ToItems" >> beam.ParDo(ToItems(config)).with_outputs("stale", main="items")
    embedded = (
        items.items
        | "Embed" >> RunInference(handler)
        | "ToRows" >> beam.Map(to_row)
        | "CountVectors" >> beam.ParDo(CountChunks())
    )
    rows = (embedded, decided.reused) | "AllVectors" >> beam.Flatten()
    stale = (decided.stale, items.stale) | "AllStaleIds" >> beam.Flatten()
    return rows, decided.dead, stale


def build_pipeline(pipeline, config: EmbedConfig):
    """Adds the embedding job to `pipeline`; returns the PCollection of vector rows."""
    from apache_beam.io.filesystems import FileSystems

    from embedpipe.vectorstore.rows import vectors_schema

    parsed = read_corpus(pipeline, config) | "ParseDocuments" >> beam.ParDo(
        ParseDocuments(config.input_format)
    ).with_outputs("dead", main="documents")
    previous = None
    if config.previous_pattern:
        previous = (
            pipeline
            | "ReadPreviousVectors" >> beam.io.ReadFromParquet(config.previous_pattern, validate=False)
            | "PreviousToRows" >> beam.Map(VectorRow.from_dict)
        )
    rows, dead, stale = embed_documents(parsed.documents, config, previous)
    all_dead = (parsed.dead, dead) | "AllDeadLetters" >> beam.Flatten()
    records = (parsed.documents, parsed.dead) | "AllRecords" >> beam.Flatten()
    verdict = within_limits(records, all_dead, config.dead_letters)
    rows = held_back(rows, verdict, "HoldVectorsForDeadLetterCount")
    stale = held_back(stale, verdict, "HoldDeletesForDeadLetterCount")
    (
        rows
        | "RowsToColumns" >> beam.Map(VectorRow.to_dict)
        | "WriteVectors"
        >> beam.io.WriteToParquet(
            FileSystems.join(config.output, VECTOR_SHARD_PREFIX),
            vectors_schema(content_hash=True),
            file_name_suffix=".parquet",
            num_shards=config.num_shards,
        )
    )
    (
        all_dead
        | "DeadLettersToJson" >> beam.Map(lambda d: json.dumps(d.to_dict(), ensure_ascii=False, default=str))
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            FileSystems.join(config.output, DEAD_LETTER_FOLDER, "dead_letters"),
            file_name_suffix=".jsonl",
            num_shards=1,
        )
    )
    if config.database_uri:
        from embedpipe.embed.sinks import DeleteFromVectorStore, WriteToVectorStore

        rows | "WriteToVectorStore" >> WriteToVectorStore(config.database_uri, config.table)
        stale | "DeleteStaleFromVectorStore" >> DeleteFromVectorStore(config.database_uri, config.table)
    return rows
