"""Vertex AI Vector Search target: datapoints in its batch format, or streamed, honouring the run's meaning.

| update method | `append` | `snapshot` |
|---|---|---|
| `batch` (a batch-update index) | JSON files + `update_embeddings` (a delta) | the same with `is_complete_overwrite=True`: the index becomes exactly the batch |
| `stream` (a stream-update index) | `upsert_datapoints` | `upsert_datapoints`, then `remove_datapoints` of the ids the previous run listed and this batch lacks |

Vector Search cannot list the ids an index holds, so a streamed snapshot needs to be told which ids the
previous run wrote: every run writes a listing beside its contents folder (`<contents_delta_uri>.ids.jsonl`,
one JSON string per line) of the ids the index holds after it (after an append without a previous listing:
this run's ids only), and `previous_ids` names the previous run's listing (or its contents folder). A
streamed snapshot without one is refused before anything is written. When a listing is given the counts
`inserted`, `updated` and `deleted` are reported. A snapshot of no rows (it would empty the index) and a
contents folder that has files already (Vector Search would apply them again) are refused too.

A batch update is one index operation; a streamed run is several requests and not atomic (Vector Search
has no transactions): the listing is written last, so a run that fails leaves the previous listing in
force, and running it again repeats the same requests (not run against Vertex).

Each datapoint: `{"id", "embedding", "restricts": [{"namespace", "allow"}], "numeric_restricts": [...]}`;
string metadata values become token restricts, numbers numeric restricts, so queries can filter on them.
Tested against fakes only (recording the SDK calls and applying them to an in-memory index): it has not
been run against Vertex AI.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from embedpipe import storage
from embedpipe.vectorstore.rows import VectorBatch, batches_of, validate_batch
from embedpipe.write_modes import check_write_mode

UPDATE_METHODS = ("batch", "stream")
#: beside the contents folder, not in it: Vector Search reads every file of that folder as datapoints
LISTING_SUFFIX = ".ids.jsonl"
#: datapoints (or ids) per upsert/remove request: a conservative size, not measured against Vertex
REQUEST_SIZE = 1000
_INDEX_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/indexes/[^/]+$")


@dataclass(frozen=True)
class VectorSearchSettings:
    """Which index, how it is updated, and what a run means.

    Attributes:
        index: `projects/P/locations/L/indexes/ID`.
        contents_delta_uri: Folder (gs:// or local) for the datapoint files; the id listing goes beside it.
        update_method: "batch" (the index's BATCH_UPDATE) or "stream" (STREAM_UPDATE).
        write_mode: "snapshot" (the batch is the whole index) or "append" (upserts only).
        previous_ids: The previous run's id listing (`<its contents_delta_uri>.ids.jsonl`, or its contents
            folder): what a streamed snapshot removes, and what the counts are taken against.
    """

    index: str
    contents_delta_uri: str = ""
    update_method: str = "batch"
    write_mode: str = "append"
    previous_ids: str = ""

    def check(self) -> VectorSearchSettings:
        """Raises ValueError naming the setting, before anything is written."""
        if not self.index:
            raise ValueError(
                "target vertex_vector_search needs vector_search_index (projects/P/locations/L/indexes/ID)"
            )
        if not _INDEX_NAME.match(self.index):
            raise ValueError(f"vector_search_index {self.index!r} must look like projects/P/locations/L/indexes/ID")
        if self.update_method not in UPDATE_METHODS:
            raise ValueError(f"vector_search_update_method {self.update_method!r} is not one of {UPDATE_METHODS}")
        check_write_mode(self.write_mode)
        if self.update_method == "batch" and not self.contents_delta_uri:
            raise ValueError("vector_search_update_method 'batch' needs contents_delta_uri (a folder for the files)")
        if self.update_method == "stream" and self.write_mode == "snapshot" and not self.previous_ids:
            raise ValueError(
                "write_mode 'snapshot' with vector_search_update_method 'stream' needs vector_search_previous_ids "
                f"(the previous run's id listing, `<its contents>{LISTING_SUFFIX}`): Vector Search cannot list "
                "an index's ids, so the removed ones cannot be found otherwise. Use write_mode 'append', or "
                "the update method 'batch' (a complete overwrite)."
            )
        return self


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


def index_datapoint(point: dict):
    """The `IndexDatapoint` message `upsert_datapoints` takes, from a batch-format datapoint."""
    from embedpipe.extras import optional_imports

    with optional_imports("cloud", "the Vertex AI Vector Search target"):
        from google.cloud.aiplatform.compat.types import index as gca_index

    message = gca_index.IndexDatapoint
    return message(
        datapoint_id=point["id"],
        feature_vector=point["embedding"],
        restricts=[
            message.Restriction(namespace=r["namespace"], allow_list=r["allow"]) for r in point.get("restricts", [])
        ],
        numeric_restricts=[
            message.NumericRestriction(namespace=r["namespace"], **{k: v for k, v in r.items() if k != "namespace"})
            for r in point.get("numeric_restricts", [])
        ],
    )


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


def listing_uri(contents_delta_uri: str) -> str:
    """Where a run's id listing goes: beside its contents folder."""
    return contents_delta_uri.rstrip("/") + LISTING_SUFFIX


def read_listing(uri: str, *, gcs_client=None) -> set[str]:
    """The ids of a listing (`….ids.jsonl`), or of the listing beside a contents folder."""
    if not uri.endswith(LISTING_SUFFIX):
        uri = listing_uri(uri)
    text = storage.read_bytes(uri, gcs_client).decode("utf-8")
    ids = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ident = json.loads(line)
        except json.JSONDecodeError:
            ident = None
        if not isinstance(ident, str):
            raise ValueError(f"{uri}:{number}: an id listing has one JSON string per line, got {line[:80]!r}")
        ids.add(ident)
    return ids


def _has_files(folder: str, gcs_client) -> bool:
    if storage.is_gcs(folder):
        bucket_name, prefix = storage.split_gcs_uri(folder.rstrip("/") + "/")
        client = storage.gcs_client(gcs_client)
        return any(True for _ in client.list_blobs(bucket_name, prefix=prefix, max_results=1))
    return Path(folder).is_dir() and any(Path(folder).iterdir())


def _put(local: Path, uri: str, gcs_client) -> str:
    if storage.is_gcs(uri):
        bucket_name, name = storage.split_gcs_uri(uri)
        storage.gcs_client(gcs_client).bucket(bucket_name).blob(name).upload_from_filename(str(local))
        return uri
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(local.read_bytes())
    return uri


@dataclass
class VectorSearchUpload:
    contents_delta_uri: str
    files: list[str]
    rows: int
    index: str
    update_method: str = "batch"
    write_mode: str = "append"
    listing: str = ""
    #: inserted / updated / deleted against the previous listing (empty without one)
    counts: dict[str, int] = field(default_factory=dict)


def upload_to_vector_search(
    batch: VectorBatch, settings: VectorSearchSettings, *, gcs_client=None, index_class=None
) -> VectorSearchUpload:
    """Writes `batch` into a Vector Search index as `settings` say (see the module's table).

    Args:
        batch: Checked rows.
        settings: Index, contents folder, update method, write mode and the previous listing.
        gcs_client: Storage client for gs:// (tests pass a fake).
        index_class: `aiplatform.MatchingEngineIndex` (tests pass a fake).
    """
    settings.check()
    validate_batch(batch)
    if settings.write_mode == "snapshot" and not len(batch):
        raise ValueError(
            f"write_mode 'snapshot' with no rows would empty Vector Search index {settings.index}; refused (an "
            "empty vectors folder or a job that wrote nothing looks like this; write_mode 'append' changes nothing)"
        )
    if settings.update_method == "batch" and _has_files(settings.contents_delta_uri, gcs_client):
        raise ValueError(
            f"contents_delta_uri {settings.contents_delta_uri} has files already: Vector Search reads every file "
            "in it, so an earlier run's datapoints would be applied again; give a new folder (the default, the "
            "task's own vector_search_contents output, always is)"
        )
    previous = read_listing(settings.previous_ids, gcs_client=gcs_client) if settings.previous_ids else None
    snapshot = settings.write_mode == "snapshot"
    current = set(batch.ids)
    if index_class is None:
        from embedpipe.extras import require

        index_class = require(
            "google.cloud.aiplatform", "cloud", "the Vertex AI Vector Search target"
        ).MatchingEngineIndex
    index = index_class(index_name=settings.index)
    uploaded: list[str] = []
    contents = settings.contents_delta_uri.rstrip("/")
    with tempfile.TemporaryDirectory() as scratch:
        if settings.update_method == "batch":
            for path in write_datapoint_files(batch, Path(scratch) / "contents"):
                uploaded.append(_put(path, f"{contents}/{path.name}", gcs_client))
            index.update_embeddings(contents_delta_uri=contents, is_complete_overwrite=snapshot)
        else:
            points = [datapoint(i, e, m) for i, e, _c, m in batch.rows()]
            for start in range(0, len(points), REQUEST_SIZE):
                index.upsert_datapoints(datapoints=[index_datapoint(p) for p in points[start : start + REQUEST_SIZE]])
            gone = sorted(previous - current) if snapshot and previous else []
            for start in range(0, len(gone), REQUEST_SIZE):
                index.remove_datapoints(datapoint_ids=gone[start : start + REQUEST_SIZE])
        listing = ""
        if contents:  # what the index holds after this run, for the next snapshot's removals
            held = current if snapshot or previous is None else current | previous
            local = Path(scratch) / "ids.jsonl"
            local.write_text("".join(json.dumps(i) + "\n" for i in sorted(held)), encoding="utf-8")
            listing = _put(local, listing_uri(contents), gcs_client)
    counts = {}
    if previous is not None:
        counts = {
            "inserted": len(current - previous),
            "updated": len(current & previous),
            "deleted": len(previous - current) if snapshot else 0,
        }
    return VectorSearchUpload(
        contents, uploaded, len(batch), settings.index, settings.update_method, settings.write_mode, listing, counts
    )
