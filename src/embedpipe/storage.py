"""Reading inputs from local paths or `gs://` URIs, and writing outputs atomically (one file, or a set).

Google Cloud Storage is reached through `google.cloud.storage`; every function that touches it takes an
optional `client` so tests can pass a fake (the live GCS path is not exercised here: no network).
On Vertex, `/gcs/<bucket>/...` FUSE paths are plain local paths and need nothing special.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """Splits `gs://bucket/some/object` into (`bucket`, `some/object`)."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI has no bucket: {uri!r}")
    return bucket, name


def gcs_client(client=None):
    """The Cloud Storage client to use: `client` when given (a real one or a test's fake), else a new one."""
    if client is not None:
        return client
    from embedpipe.extras import require

    storage = require("google.cloud.storage", "cloud", "a gs:// path")  # heavy; only when a gs:// path is used

    return storage.Client()


def exists(uri: str, client=None) -> bool:
    if is_gcs(uri):
        bucket, name = split_gcs_uri(uri)
        return gcs_client(client).bucket(bucket).blob(name).exists()
    return Path(uri).exists()


def read_bytes(uri: str, client=None) -> bytes:
    """Returns the whole content of a local file or a GCS object.

    Raises:
        FileNotFoundError: naming the path when it does not exist.
    """
    if is_gcs(uri):
        bucket, name = split_gcs_uri(uri)
        blob = gcs_client(client).bucket(bucket).blob(name)
        if not blob.exists():
            raise FileNotFoundError(f"{uri}: no such object in Google Cloud Storage")
        return blob.download_as_bytes()
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(f"{uri}: no such file")
    return path.read_bytes()


def download_folder(uri: str, destination: str | os.PathLike, client=None) -> Path:
    """Copies every object under a `gs://` prefix into a local folder (for model folders)."""
    bucket_name, prefix = split_gcs_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    destination = Path(destination)
    gcs = gcs_client(client)
    count = 0
    for blob in gcs.list_blobs(bucket_name, prefix=prefix):
        relative = blob.name[len(prefix) :]
        if not relative or relative.endswith("/"):
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        count += 1
    if count == 0:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    return destination


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Works for files and folders: a reader never sees a half-written output, and a failure leaves
    whatever was there before untouched.
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Yields a temporary path beside each of `paths`; replaces all of them only if the block succeeds.

    For outputs that belong together (`prepare`'s Parquet files): everything is written (staged) first,
    and only then are the staged files renamed into place, the old ones moved aside; if a rename fails,
    the ones already done are undone. So a failure while writing, or while renaming, leaves the previous
    set as it was.

    Why not one folder swapped in: KFP gives every output artifact its own path (siblings in the task's
    folder, beside files KFP writes itself), so there is no folder of ours to swap; and Cloud Storage FUSE
    (`/gcs/...` on Vertex) renames a file as one copy and delete but a folder only up to its
    `--rename-dir-limit` descendants (0 by default, on buckets without hierarchical namespace). Renaming
    files works on both. Only while the renames run (milliseconds locally, a copy per file on FUSE) can a
    reader see some new files beside old ones, and so can a process killed then; on KFP no task reads an
    output before its task has succeeded, and a retry rewrites the whole set.

    Args:
        paths: The outputs, all different.

    Yields:
        One path per output, in the same order, to write to (a file or a folder); none exists yet.
    """
    targets = [Path(p) for p in paths]
    if len({t.resolve() for t in targets}) != len(targets):
        raise ValueError(f"atomic_paths needs different paths, got {[str(t) for t in targets]}")
    staging: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)))
        yield [folder / "out" for folder in staging]
        _replace_all(targets, staging)
    finally:
        for folder in staging:
            shutil.rmtree(folder, ignore_errors=True)


def _replace_all(targets: list[Path], staging: list[Path]) -> None:
    """Moves each `staging/out` onto its target (the old one into `staging/previous`); all or none."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for target, folder in zip(targets, staging):
            previous = None
            if target.exists() or target.is_symlink():
                previous = folder / "previous"
                os.replace(target, previous)
            done.append((target, previous))
            os.replace(folder / "out", target)
    except BaseException:
        for target, previous in reversed(done):
            _remove(target)
            if previous is not None:
                os.replace(previous, target)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
