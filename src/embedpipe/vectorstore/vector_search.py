"""Vertex AI Vector Search target: JSONL files in its batch format, then an index update from them.

Each line: `{"id", "embedding", "restricts": [{"namespace", "allow"}], "numeric_restricts": [...]}`;
string metadata values become token restricts, numbers numeric restricts, so queries can filter on them.
Tested against fakes only: it has not been run against Vertex AI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from embedpipe import storage
from embedpipe.vectorstore.rows import VectorBatch, batches_of, validate_batch


def datapoint(ident: str, embedding, metadata: str | None) -> dict:
    """One Vector Search datapoint (batch JSON format) from a row."""
    point: dict = {"id": ident, "embedding": [float(x) for x in embedding]}
    restricts, numeric = [], []
    for key, value in (json.loads(metadata) if metadata else {}).items():
        if isinstance(value, bool) or isinstance(value, str):
            restricts.append({"namespace": key, "allow": [str(value).lower() if isinstance(value, bool) else value]})
        elif isinstance(value, (int, float)):
            numeric.append({"namespace": key, ("value_int" if isinstance(value, int) else "value_float"): value})
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            restricts.append({"namespace": key, "allow": value})
    if restricts:
        point["restricts"] = restricts
    if numeric:
        point["numeric_restricts"] = numeric
    return point


def write_datapoint_files(batch: VectorBatch, folder: str | Path, *, rows_per_file: int = 50_000) -> list[Path]:
    """Writes `batch` as `embeddings-00000.json` ... (one JSON object per line) into a local folder."""
    validate_batch(batch)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for number, part in enumerate(batches_of(batch, rows_per_file)):
        path = folder / f"embeddings-{number:05d}.json"
        with open(path, "w", encoding="utf-8") as handle:
            for ident, embedding, _content, metadata in part.rows():
                handle.write(json.dumps(datapoint(ident, embedding, metadata)) + "\n")
        files.append(path)
    return files


@dataclass
class VectorSearchUpload:
    contents_delta_uri: str
    files: list[str]
    rows: int
    index: str


def upload_to_vector_search(
    batch: VectorBatch,
    index_name: str,
    contents_delta_uri: str,
    *,
    complete_overwrite: bool = False,
    gcs_client=None,
    index_class=None,
) -> VectorSearchUpload:
    """Writes the datapoint files to `contents_delta_uri` (gs:// or local) and asks the index to take them.

    Args:
        batch: Checked rows.
        index_name: `projects/P/locations/L/indexes/ID` of a batch-update Vector Search index.
        contents_delta_uri: Folder for the JSON files; the index update reads it.
        complete_overwrite: Replace the whole index with these rows (else upsert them).
        gcs_client: Storage client for gs:// (tests pass a fake).
        index_class: `aiplatform.MatchingEngineIndex` (tests pass a fake).
    """
    import tempfile

    if not index_name.startswith("projects/") or "/indexes/" not in index_name:
        raise ValueError(f"index {index_name!r} must look like projects/P/locations/L/indexes/ID")
    uploaded = []
    with tempfile.TemporaryDirectory() as scratch:
        local = write_datapoint_files(batch, scratch)
        if storage.is_gcs(contents_delta_uri):
            bucket_name, prefix = storage.split_gcs_uri(contents_delta_uri.rstrip("/") + "/")
            client = storage.gcs_client(gcs_client)
            bucket = client.bucket(bucket_name)
            for path in local:
                bucket.blob(prefix + path.name).upload_from_filename(str(path))
                uploaded.append(f"gs://{bucket_name}/{prefix}{path.name}")
        else:
            target = Path(contents_delta_uri)
            target.mkdir(parents=True, exist_ok=True)
            for path in local:
                (target / path.name).write_bytes(path.read_bytes())
                uploaded.append(str(target / path.name))
    if index_class is None:
        from google.cloud.aiplatform import MatchingEngineIndex as index_class
    index = index_class(index_name=index_name)
    index.update_embeddings(contents_delta_uri=contents_delta_uri, is_complete_overwrite=complete_overwrite)
    return VectorSearchUpload(contents_delta_uri, uploaded, len(batch), index_name)
