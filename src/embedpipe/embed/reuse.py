"""Reusing the corpus vectors `evaluate` already computed, so the embedding job does not embed them again.

An `evaluate` task's `corpus_embeddings` output holds, per model it evaluated, `<name>.parquet` (`id`,
`embedding`: every document of the labelled corpus, float32, normalised) and `<name>.json` (the model
reference, the prompts and the dimension): `base.*` from the base-only task, `base.*` and `tuned.*` from
the tuned-vs-base task. When the corpus to index is that corpus, or contains it, those vectors are what
the embedding job would compute.

`vectors_from_evaluation` turns them into a "previous vectors" file for the job's incremental mode: one
row per corpus document evaluation has a vector for, in the job's vector schema, with the content hash
the job itself computes for the document (formatted text + model identity + chunking) and the vector cut
to `output_dimensionality` and re-normalised as the job does. The job carries those rows over (its
`documents_reused` metric counts them) and embeds only the other documents.

Since the hash is computed from the corpus being indexed and the job's own model, it cannot tell by
itself whether evaluation's vector was computed from that text with that model; that is checked here,
before anything is reused:

- the job embeds whole documents (`chunk_tokens` 0) with the torch backend, as evaluation does;
- evaluation used the same model (the same reference, or model files with the same fingerprint) and the
  same document prompt;
- each document's text, formatted with the prompt, must be the text evaluation embedded under its id
  (evaluation saves a hash of every text it embedded, `embedpipe.evaluate.text_hash`): a document edited
  since, or an id that names another document in the index corpus, is embedded by the job instead;
- a few of the documents are embedded again here and must match evaluation's vectors (cosine > 0.9999):
  this catches a model that computes other vectors under the same name, and, for vectors saved without
  text hashes, ids that name other texts.

When a model or prompt check fails nothing is reused, the job embeds everything, and the log says why.

Example:
    >>> from embedpipe.embed.job import prepare_config                                        # doctest: +SKIP
    >>> config = prepare_config("corpus.parquet", "/tmp/vectors", task_type="RETRIEVAL_QUERY")  # doctest: +SKIP
    >>> vectors_from_evaluation("corpus_embeddings", "corpus.parquet", config, "/tmp/previous")  # doctest: +SKIP
    14
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: The file written into `output_dir`: the job's `previous_pattern` points at it.
REUSED_FILE = "vectors-from-evaluation.parquet"
#: The models an evaluate task saves vectors of, in the order they are tried.
EVALUATION_NAMES = ("tuned", "base")
#: Documents embedded again to check evaluation's vectors before reusing them.
SPOT_CHECK_DOCUMENTS = 8
#: The least cosine between evaluation's vector and a fresh one for the same document.
MIN_COSINE = 0.9999


def vectors_from_evaluation(
    evaluation_dir: str,
    corpus_path: str,
    config,
    output_dir: str,
    *,
    model: str = "",
    spot_check: int = SPOT_CHECK_DOCUMENTS,
) -> int:
    """Writes the vectors evaluation computed as previous vectors for an embedding job.

    Args:
        evaluation_dir: An `evaluate` task's `corpus_embeddings` folder.
        corpus_path: The corpus the job embeds (a local file or folder; JSONL or Parquet, as the job reads it).
        config: The job's `EmbedConfig` (from `prepare_config`): its prompts, model identity, chunking,
            output_dimensionality and backend decide the rows written.
        output_dir: Folder to write `vectors-from-evaluation.parquet` into.
        model: The job's model as this machine reads it (default: `config.model`). A Dataflow job reads a
            tuned model at its `gs://` URI; here, as in the evaluate task, it is the `/gcs/...` path.
        spot_check: Documents to embed again and compare with evaluation's vectors (0 = trust them).

    Returns:
        How many vectors were written (0 = nothing reusable, nothing written; the log says why).
    """
    import numpy as np

    from embedpipe.models import truncate_and_normalize

    model = model or config.model
    folder = Path(evaluation_dir)
    name, why_not = None, _unsupported(config)
    if not why_not:
        name, why_not = _matching_evaluation(folder, model, config)
    if name is None:
        log.info("not reusing the vectors evaluate computed: %s", why_not)
        return 0

    ids, vectors, text_hashes = _read_vectors(folder / f"{name}.parquet")
    if config.model_settings.output_dimensionality > vectors.shape[1]:
        log.info(
            "not reusing the vectors evaluate computed: they have %d dimensions, the job keeps %d",
            vectors.shape[1],
            config.model_settings.output_dimensionality,
        )
        return 0
    vectors = truncate_and_normalize(vectors, config.model_settings.output_dimensionality).astype(np.float32)
    rows, formatted, order, edited = _rows_for_corpus(
        corpus_path, config, {doc_id: i for i, doc_id in enumerate(ids)}, text_hashes
    )
    if edited:
        log.info("%d documents have other texts than evaluation embedded under their ids; the job embeds them", edited)
    if not rows["id"]:
        log.info(
            "not reusing the vectors evaluate computed: none of the %d documents it embedded is in %s "
            "with the same text",
            len(ids),
            corpus_path,
        )
        return 0
    vectors = vectors[order]
    why_not = _spot_check(rows["id"], formatted, vectors, model, config, spot_check)
    if why_not:
        log.warning("not reusing the vectors evaluate computed: %s", why_not)
        return 0

    _write(rows, vectors, Path(output_dir) / REUSED_FILE)
    log.info(
        "reusing %d vectors computed by evaluate (%s model %s, %s); the job embeds only the other documents",
        len(rows["id"]),
        name,
        model,
        evaluation_dir,
    )
    return len(rows["id"])


def _unsupported(config) -> str:
    """Why evaluation's vectors cannot be what this job computes, whatever they are ("" = they can)."""
    if config.chunk_tokens:
        return "the job splits documents into chunks (chunk_tokens > 0); evaluation embedded whole documents"
    if config.model_settings.backend != "torch":
        return f"the job embeds with the {config.model_settings.backend!r} backend; evaluation embeds with torch"
    return ""


def _matching_evaluation(folder: Path, model: str, config) -> tuple[str | None, str]:
    """The name of the evaluated model whose vectors this job would compute, or None and why none is."""
    found = [
        name
        for name in EVALUATION_NAMES
        if (folder / f"{name}.parquet").is_file() and (folder / f"{name}.json").is_file()
    ]
    if not found:
        return (
            None,
            f"{folder} holds no evaluate vectors ({' or '.join(f'{n}.parquet + {n}.json' for n in EVALUATION_NAMES)})",
        )
    reasons = []
    for name in found:
        identity = json.loads((folder / f"{name}.json").read_text())
        evaluated = str(identity.get("model", ""))
        document_prompt = (identity.get("prompts") or {}).get("document")
        if not _same_model(evaluated, model):
            reasons.append(f"{name}: evaluation embedded with model {evaluated!r}, the job with {model!r}")
        elif document_prompt != config.prompts.document:
            reasons.append(
                f"{name}: evaluation's document prompt is {document_prompt!r}, the job's {config.prompts.document!r}"
            )
        else:
            return name, ""
    return None, "; ".join(reasons)


def _same_model(a: str, b: str) -> bool:
    """Whether two model references are the same model: the same reference, or files with the same fingerprint."""
    from embedpipe.models import model_fingerprint

    if a.strip() == b.strip():
        return True
    try:
        return model_fingerprint(a) == model_fingerprint(b)
    except Exception:  # noqa: BLE001 - a reference this machine cannot read: not known to be the same
        return False


def _read_vectors(path: Path):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(
        table.num_rows, -1
    )
    hashes = table.column("text_hash").to_pylist() if "text_hash" in table.column_names else None
    return [str(i) for i in table.column("id").to_pylist()], vectors, hashes


def _corpus_documents(corpus_path: str):
    """The corpus's documents and dead letters, read from the same files and parsed as the job does."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from embedpipe.embed import documents as docs
    from embedpipe.embed.job import list_files as _list_files
    from embedpipe.embed.job import resolve_input

    _, input_format = resolve_input(corpus_path)
    for file in _list_files(corpus_path):
        with FileSystems.open(file) as handle:  # .gz JSONL decompressed, as ReadFromText does
            if input_format == "parquet":
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=8192):
                    for record in batch.to_pylist():
                        yield docs.parse_record(record)
            else:
                for line in iter(handle.readline, b""):
                    if line.strip():
                        yield docs.parse_json_line(line.rstrip(b"\r\n"))


def _rows_for_corpus(corpus_path: str, config, row_of: dict[str, int], text_hashes: list[str] | None = None):
    """Vector rows (without embeddings) of the corpus documents evaluation embedded, as `Decide` would hash them.

    A document whose formatted text does not hash to what evaluation embedded under its id (when
    evaluation saved text hashes) is left out: the job embeds it.

    Returns:
        (columns of the rows, formatted texts, evaluation row of each, documents left out as edited).
    """
    from embedpipe.embed import documents as docs
    from embedpipe.evaluate import text_hash

    rows: dict[str, list] = {"id": [], "content": [], "metadata": [], "content_hash": []}
    formatted_texts, order, edited = [], [], 0
    for doc in _corpus_documents(corpus_path):
        if docs.is_dead_letter(doc) or doc.id not in row_of:
            continue
        formatted = config.prompts.format_documents([doc.text], [doc.title])[0]
        if text_hashes is not None and text_hashes[row_of[doc.id]] != text_hash(formatted):
            edited += 1
            continue
        rows["id"].append(doc.id)
        rows["content"].append(doc.text)
        rows["metadata"].append(docs.document_metadata(doc))
        rows["content_hash"].append(docs.content_hash(formatted, config.model_identity, config.chunking))
        formatted_texts.append(formatted)
        order.append(row_of[doc.id])
    return rows, formatted_texts, order, edited


def _spot_check(ids: list[str], formatted: list[str], vectors, model: str, config, count: int) -> str:
    """Embeds `count` of the documents (spread over the corpus) as the job would; why they differ ("" = they match)."""
    import numpy as np

    from embedpipe.embed.handler import load_encoder

    if count <= 0:
        return ""
    picks = sorted({int(i) for i in np.linspace(0, len(ids) - 1, num=min(count, len(ids))).round()})
    # fp32 on the CPU, as evaluate embeds; a GPU job's bf16 vectors differ from both by rounding only.
    encoder = load_encoder(
        model,
        batch_size=config.model_settings.batch_size,
        tokens_per_batch=config.model_settings.tokens_per_batch,
        output_dimensionality=config.model_settings.output_dimensionality,
        device="cpu",
        precision="fp32",
        hf_token_secret=config.model_settings.hf_token_secret,
    )
    fresh = encoder.embed([formatted[i] for i in picks])
    cosines = np.sum(fresh * vectors[picks], axis=1)
    worst = int(np.argmin(cosines))
    if cosines[worst] < MIN_COSINE:
        return (
            f"document {ids[picks[worst]]!r} embedded again has cosine {cosines[worst]:.6f} (< {MIN_COSINE}) with "
            "evaluation's vector: evaluation embedded another text under this id, or embedded it differently"
        )
    log.info(
        "checked %d of the reused vectors against a fresh embedding: cosine >= %.6f", len(picks), float(cosines.min())
    )
    return ""


def _write(rows: dict[str, list], vectors, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedpipe.vectorstore.rows import vectors_schema

    schema = vectors_schema(content_hash=True)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    columns = {**rows, "embedding": embedding.cast(schema.field("embedding").type)}
    table = pa.table(
        {field.name: columns.get(field.name, pa.nulls(len(rows["id"]), field.type)) for field in schema}, schema=schema
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
