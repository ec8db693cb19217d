"""Vector rows: reading Parquet vector shards and checking them before anything is written.

The columns are the vector store's (`id`, `embedding`, `content`, `metadata` as JSON text), the ones
`embed_corpus` writes; extra columns (`content_hash`) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedpipe.storable import find_unstorable
from embedpipe.validation import DataValidationError, Problem, ProblemCollector

COLUMNS = ("id", "embedding", "content", "metadata")


def vectors_schema(*, content_hash: bool = False):
    """Arrow schema of the vectors the store loads; the one definition of the vector columns.

    Args:
        content_hash: Add the `content_hash` column, as the embedding job's Parquet shards have it (the
            store ignores it; an incremental run compares it to decide what to embed again).
    """
    import pyarrow as pa

    fields = [
        ("id", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("content", pa.string()),
        ("metadata", pa.string()),
    ]
    if content_hash:
        fields.append(("content_hash", pa.string()))
    return pa.schema(fields)


@dataclass
class VectorBatch:
    """Rows to write: ids, an (n, dim) float32 matrix, contents and metadata (JSON text or None).

    Example:
        >>> import numpy as np
        >>> batch = VectorBatch(["a", "b"], np.eye(2, dtype="float32"), ["A", "B"], ['{"k": 1}', None])
        >>> batch.dimension, len(batch)
        (2, 2)
    """

    ids: list[str]
    embeddings: np.ndarray
    contents: list[str | None] = field(default_factory=list)
    metadata: list[str | None] = field(default_factory=list)
    source: str = "<memory>"

    def __post_init__(self):
        self.ids = [i if isinstance(i, str) or i is None else str(i) for i in self.ids]
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim == 1 and len(self.ids) == 0:
            self.embeddings = self.embeddings.reshape(0, 0)
        if not self.contents:
            self.contents = [None] * len(self.ids)
        if not self.metadata:
            self.metadata = [None] * len(self.ids)
        self.metadata = [m if m is None or isinstance(m, str) else json.dumps(m) for m in self.metadata]
        if not (len(self.ids) == len(self.contents) == len(self.metadata) == len(self.embeddings)):
            raise ValueError(
                f"{self.source}: ids ({len(self.ids)}), embeddings ({len(self.embeddings)}), contents "
                f"({len(self.contents)}) and metadata ({len(self.metadata)}) differ in length"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    def rows(self) -> Iterator[tuple[str, np.ndarray, str | None, str | None]]:
        return zip(self.ids, self.embeddings, self.contents, self.metadata)

    @classmethod
    def concat(cls, batches: Sequence[VectorBatch]) -> VectorBatch:
        if not batches:
            return cls([], np.zeros((0, 0), np.float32))
        dims = {b.dimension for b in batches if len(b)}
        if len(dims) > 1:
            raise DataValidationError(
                [
                    Problem(
                        batches[0].source,
                        None,
                        "embedding",
                        f"shards have different embedding dimensions: {sorted(dims)}",
                    )
                ]
            )
        nonempty = [b for b in batches if len(b)] or batches[:1]
        return cls(
            [i for b in batches for i in b.ids],
            np.concatenate([b.embeddings for b in nonempty]),
            [c for b in batches for c in b.contents],
            [m for b in batches for m in b.metadata],
            source=batches[0].source if len(batches) == 1 else f"{len(batches)} shards",
        )


def parquet_files(path: str | Path) -> list[Path]:
    """The Parquet files of a vectors artifact: the file itself, or the folder's `*.parquet` (not `_*`, `.*`)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(
            f"vectors {path} do not exist: give a Parquet file or a folder of vectors-*.parquet shards"
        )
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise FileNotFoundError(f"no .parquet files in {path} (dead letters under _dead_letters/ are skipped)")
    return files


def _embedding_matrix(column, source: str) -> np.ndarray:
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if column.null_count:
        rows = [i for i, v in enumerate(column.is_null().to_pylist()) if v][:5]
        raise DataValidationError([Problem(source, None, "embedding", f"row(s) {rows}: missing (null)")])
    lengths = np.diff(np.asarray(column.offsets))
    if len(set(lengths.tolist())) > 1:
        values, counts = np.unique(lengths, return_counts=True)
        expected = int(values[np.argmax(counts)])
        bad = np.nonzero(lengths != expected)[0][:5].tolist()
        raise DataValidationError(
            [
                Problem(
                    source,
                    None,
                    "embedding",
                    f"row {i}: {int(lengths[i])} values, expected {expected} like the other rows",
                )
                for i in bad
            ]
        )
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(n, int(lengths[0]))


def read_parquet_vectors(path: str | Path) -> VectorBatch:
    """Reads a Parquet vectors file or folder of shards into one VectorBatch (ids, embeddings, content, metadata)."""
    import pyarrow.parquet as pq

    batches = []
    for file in parquet_files(path):
        table = pq.read_table(file)
        missing = [c for c in ("id", "embedding") if c not in table.column_names]
        if missing:
            raise DataValidationError(
                [Problem(str(file), None, None, f"missing column(s) {missing}; found {table.column_names}")]
            )
        contents = table.column("content").to_pylist() if "content" in table.column_names else []
        metadata = table.column("metadata").to_pylist() if "metadata" in table.column_names else []
        batches.append(
            VectorBatch(
                table.column("id").to_pylist(),
                _embedding_matrix(table.column("embedding"), str(file)),
                contents,
                metadata,
                source=str(file),
            )
        )
    return VectorBatch.concat(batches)


def write_parquet_vectors(batch: VectorBatch, path: str | Path) -> Path:
    """Writes a VectorBatch as one Parquet file with the store's columns (for tests, benchmarks, other targets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = batch.dimension
    embedding = (
        pa.FixedSizeListArray.from_arrays(pa.array(batch.embeddings.reshape(-1), pa.float32()), dim)
        if dim
        else pa.array([], pa.list_(pa.float32()))
    )
    table = pa.table(
        {
            "id": pa.array(batch.ids, pa.string()),
            "embedding": embedding.cast(pa.list_(pa.float32())),
            "content": pa.array(batch.contents, pa.string()),
            "metadata": pa.array(batch.metadata, pa.string()),
        }
    )
    pq.write_table(table, path)
    return path


#: The longest id the primary key's btree index takes (Postgres refuses index entries over 2,704 bytes).
MAX_ID_BYTES = 2700


def text_problem(value: str) -> str | None:
    """Why PostgreSQL would refuse this text (a NUL character, or not encodable as UTF-8), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\x00), which PostgreSQL text cannot hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode ({err.reason} at character {err.start})"
    return None


def _json_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (PostgreSQL's jsonb refuses it)")


def _json_problem(value) -> str | None:
    """What jsonb would refuse inside parsed JSON: NUL characters or unpaired surrogates in strings (the first)."""
    for path, problem in find_unstorable(value, "metadata"):
        return f"value at {path}: {problem}"
    return None


#: Below this no value's square is a normal float32 (it may be flushed to 0): the vector has no length.
TINY_VALUE = 1.1e-19
#: Above this squared length float32 sums may overflow (pgvector sums squares in float32).
HUGE_SQUARED_NORM = 1e38


def _vector_problems(embeddings: np.ndarray) -> dict[int, str]:
    """Rows whose vector PostgreSQL would store but cannot score: NaN/inf values, or a zero or overflowing norm.

    pgvector sums squares in float32: a vector of tiny values has norm 0 there (cosine distance NaN, as
    for an all-zero vector), one of huge values an infinite norm (NaN again). Both are refused.
    """
    finite = np.isfinite(embeddings).all(axis=1)
    values = np.where(np.isfinite(embeddings), embeddings, 0).astype(np.float64)
    largest = np.abs(values).max(axis=1) if values.shape[1] else np.zeros(len(values))
    squares = np.einsum("ij,ij->i", values, values)
    problems = {int(row): "contains NaN or inf" for row in np.nonzero(~finite)[0]}
    for row in np.nonzero(finite & (largest < TINY_VALUE))[0].tolist():
        problems[row] = "is a zero vector (every value 0 or too small): it has no direction to search by"
    for row in np.nonzero(finite & (squares > HUGE_SQUARED_NORM))[0].tolist():
        problems[row] = "has values too large for float32 arithmetic (its length overflows)"
    return dict(sorted(problems.items()))


def validate_batch(batch: VectorBatch, *, dimension: int | None = None, max_problems: int = 20) -> None:
    """Raises DataValidationError listing the bad rows, each with its id; nothing is written when this fails.

    Refused: an empty, duplicate or too long id; NaN/inf, zero or overflowing vectors; a wrong dimension;
    text with NUL characters or invalid Unicode; metadata that is not a JSON object PostgreSQL's jsonb
    takes (NaN, NUL, unpaired surrogates). Rows are numbered from 0 in the upload.
    """
    problems = ProblemCollector(max_problems)
    source = batch.source
    if dimension is not None and len(batch) and batch.dimension != dimension:
        problems.add(
            source, None, "embedding", f"embeddings have {batch.dimension} dimensions, the table has {dimension}"
        )
    seen: dict[str, int] = {}
    for row, ident in enumerate(batch.ids):
        if ident is None or not str(ident).strip():
            problems.add(source, None, "id", f"row {row}: id is empty")
        elif (problem := text_problem(ident)) is not None:
            problems.add(source, None, "id", f"row {row} (id {ident!r}): id {problem}")
        elif len(ident.encode("utf-8")) > MAX_ID_BYTES:
            problems.add(
                source, None, "id", f"row {row} (id {ident[:40]!r}...): id is longer than {MAX_ID_BYTES} bytes"
            )
        elif ident in seen:
            problems.add(
                source, None, "id", f"row {row}: id {ident!r} is a duplicate of row {seen[ident]} (one row per id)"
            )
        else:
            seen[ident] = row
    if len(batch):
        for row, problem in _vector_problems(batch.embeddings).items():
            problems.add(source, None, "embedding", f"row {row} (id {batch.ids[row]!r}): {problem}")
    for row, content in enumerate(batch.contents):
        if content is not None and (problem := text_problem(content)) is not None:
            problems.add(source, None, "content", f"row {row} (id {batch.ids[row]!r}): {problem}")
    for row, meta in enumerate(batch.metadata):
        if meta is None or meta == "":
            continue
        try:
            value = json.loads(meta, parse_constant=_json_constant)
        except json.JSONDecodeError as err:
            problems.add(source, None, "metadata", f"row {row} (id {batch.ids[row]!r}): not JSON ({err.msg})")
            continue
        except ValueError as err:
            problems.add(source, None, "metadata", f"row {row} (id {batch.ids[row]!r}): {err}")
            continue
        if not isinstance(value, dict):
            problems.add(
                source,
                None,
                "metadata",
                f"row {row} (id {batch.ids[row]!r}): must be a JSON object, got {type(value).__name__}",
            )
        elif (problem := text_problem(meta) or _json_problem(value)) is not None:
            problems.add(source, None, "metadata", f"row {row} (id {batch.ids[row]!r}): {problem}")
    problems.raise_if_any()


def database_rows(batch: VectorBatch) -> Iterable[tuple]:
    """(id, embedding, content, metadata) tuples as the store loads them (empty metadata is NULL)."""
    # jsonb in binary COPY is a version byte (1) and the JSON text; metadata is already checked JSON text
    return ((ident, embedding, content, meta or None) for ident, embedding, content, meta in batch.rows())


def batches_of(batch: VectorBatch, size: int) -> Iterable[VectorBatch]:
    for start in range(0, len(batch), size):
        end = start + size
        yield VectorBatch(
            batch.ids[start:end],
            batch.embeddings[start:end],
            batch.contents[start:end],
            batch.metadata[start:end],
            source=batch.source,
        )
