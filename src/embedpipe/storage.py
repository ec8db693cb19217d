"""Reading inputs from local paths or `gs://` URIs, and writing outputs atomically.

Google Cloud Storage is reached through `google.cloud.storage`; every function that touches it takes an
optional `client` so tests can pass a fake (the live GCS path is not exercised here: no network).
On Vertex, `/gcs/<bucket>/...` FUSE paths are plain local paths and need nothing special.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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
    from google.cloud import storage  # heavy; only when a gs:// path is used

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
