"""Reusing the corpus vectors `evaluate` already computed, so the embedding job does not embed them again.

`evaluate` saves the vectors of every document of the labelled corpus (`<name>.parquet` with `id`,
`embedding`; `<name>.json` with the model, prompts and dimension). When the corpus to index is that corpus,
or contains it, those vectors are what the embedding job would compute. This module turns them into a
"previous vectors" input of the job's incremental mode: each row carries the content hash the job itself
computes for the document (formatted text + model identity + chunking), so the job carries them over and
embeds only the documents evaluation did not see or that differ. Nothing is trusted blindly: a different
model, prompt or dimension means no reuse, and any per-document difference means a different hash and a
fresh embedding.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

REUSED_FILE = "vectors-from-evaluation.parquet"


def _corpus_records(path: str):
    """Rows of a corpus file or folder (Parquet as prepare_data writes it, or BEIR JSONL)."""
    import pyarrow.parquet as pq

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))) if root.is_dir() else [root]
    for file in files:
        if file.suffix in (".jsonl", ".json"):
            with file.open(encoding="utf-8-sig") as handle:
                for line in handle:
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError:
                            continue  # the job reports it as a dead letter
        else:
            yield from pq.read_table(file).to_pylist()


def vectors_from_evaluation(evaluation_dir: str, name: str, corpus_path: str, config, output_dir: str) -> int:
    """Writes evaluate's vectors of `name` ("base" or "tuned") as previous vectors for an embedding job.

    Args:
        evaluation_dir: An `evaluate` task's `corpus_embeddings` folder.
        name: Which model's vectors: "tuned" when the job embeds with the tuned model, else "base".
        corpus_path: The corpus the job will embed (local path).
        config: The job's `EmbedConfig` (prompts, model identity, chunking, output_dimensionality, backend).
        output_dir: Folder to write `vectors-from-evaluation.parquet` into.

    Returns:
        How many vectors were written (0 = nothing reusable; the reason is logged).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedpipe.embed import documents as docs
    from embedpipe.embed.handler import truncate_and_normalize
    from embedpipe.embed.pipeline import _metadata, vector_schema

    data, info = Path(evaluation_dir) / f"{name}.parquet", Path(evaluation_dir) / f"{name}.json"
    why_not = None
    if config.chunk_tokens:
        why_not = "the job splits documents into chunks; evaluation embedded whole documents"
    elif config.backend != "torch":
        why_not = f"the job embeds with the {config.backend!r} backend; evaluation used torch"
    elif not (data.is_file() and info.is_file()):
        why_not = f"no {name}.parquet / {name}.json in {evaluation_dir}"
    if why_not is None:
        identity = json.loads(info.read_text())
        if identity.get("prompts") != config.prompts.to_dict():
            why_not = f"evaluation used other prompts ({identity.get('prompts')}) than the job ({config.prompts.to_dict()})"
    if why_not:
        log.info("not reusing evaluation vectors: %s", why_not)
        return 0

    table = pq.read_table(data)
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten(), dtype=np.float32).reshape(table.num_rows, -1)
    if config.output_dimensionality and config.output_dimensionality > vectors.shape[1]:
        log.info("not reusing evaluation vectors: they have %d dimensions, the job keeps %d", vectors.shape[1], config.output_dimensionality)
        return 0
    vectors = truncate_and_normalize(vectors, config.output_dimensionality).astype(np.float32)
    row_of = {doc_id: i for i, doc_id in enumerate(table.column("id").to_pylist())}

    rows = {"id": [], "embedding": [], "content": [], "metadata": [], "content_hash": []}
    for record in _corpus_records(corpus_path):
        doc = docs.parse_record(record)
        if docs.is_dead_letter(doc) or doc["id"] not in row_of:
            continue
        formatted = config.prompts.format_documents([doc["text"]], [doc["title"]])[0]
        rows["id"].append(doc["id"])
        rows["embedding"].append(vectors[row_of[doc["id"]]].tolist())
        rows["content"].append(doc["text"])
        rows["metadata"].append(_metadata(doc))
        rows["content_hash"].append(docs.content_hash(formatted, config.model_identity, config.chunking))
    schema = vector_schema()
    columns = {field.name: rows.get(field.name, [None] * len(rows["id"])) for field in schema}
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), Path(output_dir) / REUSED_FILE)
    log.info("reusing %d vectors computed by evaluate (%s model); the job embeds only the other documents", len(rows["id"]), name)
    return len(rows["id"])
