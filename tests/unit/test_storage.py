"""gs:// reading through a fake storage client (the live Google Cloud Storage path is not run here)."""

import pytest

from embedpipe import storage
from embedpipe.prepare import prepare_data
from tests.conftest import EXAMPLE_DATA


class FakeBlob:
    def __init__(self, bucket, name):
        self.bucket, self.name = bucket, name

    def exists(self):
        return self.name in self.bucket.objects

    def download_as_bytes(self):
        return self.bucket.objects[self.name]

    def download_to_filename(self, filename):
        with open(filename, "wb") as f:
            f.write(self.bucket.objects[self.name])


class FakeBucket:
    def __init__(self, objects):
        self.objects = objects

    def blob(self, name):
        return FakeBlob(self, name)


class FakeClient:
    """Just the calls embedpipe makes on google.cloud.storage.Client."""

    def __init__(self, buckets):
        self.buckets = {name: FakeBucket(objects) for name, objects in buckets.items()}

    def bucket(self, name):
        return self.buckets[name]

    def list_blobs(self, bucket, prefix=""):
        b = self.buckets[bucket]
        return [FakeBlob(b, name) for name in sorted(b.objects) if name.startswith(prefix)]


def test_prepare_data_reads_gs_uris_through_the_storage_client():
    objects = {
        f"data/{name}": (EXAMPLE_DATA / name).read_bytes()
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv")
    }
    client = FakeClient({"my-bucket": objects})
    prepared = prepare_data(
        "gs://my-bucket/data/corpus.jsonl",
        "gs://my-bucket/data/queries.jsonl",
        "gs://my-bucket/data/qrels/train.tsv",
        test_labels_path="gs://my-bucket/data/qrels/test.tsv",
        gcs_client=client,
    )
    assert prepared.metrics["corpus_documents"] == 400
    assert prepared.metrics["test_labels"] == 69


def test_missing_gcs_object_names_the_uri():
    with pytest.raises(FileNotFoundError, match="gs://b/nope.jsonl"):
        storage.read_bytes("gs://b/nope.jsonl", client=FakeClient({"b": {}}))


def test_download_folder_copies_every_object(tmp_path):
    client = FakeClient({"b": {"m/config.json": b"{}", "m/sub/x.bin": b"1", "other/y": b"2"}})
    storage.download_folder("gs://b/m", tmp_path, client=client)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/x.bin",
    ]


def test_bad_gcs_uris():
    with pytest.raises(ValueError, match="no bucket"):
        storage.split_gcs_uri("gs:///x")
