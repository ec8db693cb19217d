"""AlloyDB / Cloud SQL (fake connectors handing out real pg8000 connections to the embedded Postgres),
passwords, BigQuery and Vertex AI Vector Search (fake clients): none of these cloud services is reachable here."""

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pg8000.dbapi
import pytest

from embedpipe.vectorstore import ConnectionSettings, write_parquet_vectors
from embedpipe.vectorstore.connections import ConnectionConfigError, redact_uri, resolve_password
from embedpipe.vectorstore.search import search_vector
from embedpipe.vectorstore.upload import UploadConfig, upload_vectors
from tests.unit.cloud_fakes import FakeBigQuery
from tests.unit.test_vectorstore import make_batch


class FakeConnector:
    """Stands in for the AlloyDB / Cloud SQL `Connector`: records calls, connects to the embedded Postgres with pg8000."""

    made = []

    def __init__(self, pg_uri, **kwargs):
        self.kwargs, self.calls, self.closed = kwargs, [], False
        parsed = urlparse(pg_uri)
        host = parse_qs(parsed.query)["host"][0]
        self.socket = str(next(Path(host).glob(".s.PGSQL.*")))
        FakeConnector.made.append(self)

    def connect(self, instance, driver, **kwargs):
        self.calls.append((instance, driver, kwargs))
        return pg8000.dbapi.connect(user="postgres", database="postgres", unix_sock=self.socket)

    def close(self):
        self.closed = True


class FakeSecrets:
    def __init__(self):
        self.names = []

    def access_secret_version(self, request):
        self.names.append(request["name"])
        return SimpleNamespace(payload=SimpleNamespace(data=b"s3cret"))


@pytest.fixture
def vectors(tmp_path):
    folder = tmp_path / "vectors"
    write_parquet_vectors(make_batch(30, dim=8, seed=1), folder / "vectors-00000-of-00002.parquet")
    write_parquet_vectors(make_batch(20, dim=8, seed=2, prefix="e"), folder / "vectors-00001-of-00002.parquet")
    write_parquet_vectors(make_batch(2, dim=3, prefix="bad"), folder / "_dead_letters" / "x.parquet")  # skipped
    return folder


def test_alloydb_with_secret_password_through_pg8000(pg_uri, vectors, monkeypatch):
    table = f"a_{uuid.uuid4().hex[:8]}"
    secrets = FakeSecrets()
    config = UploadConfig(
        target="alloydb",
        instance="projects/p/locations/us-central1/clusters/c/instances/i",
        database="postgres",
        user="embedpipe",
        password_secret="projects/p/secrets/db-password",
        table=table,
    )
    summary = upload_vectors(
        str(vectors), config, connector_factory=lambda **kw: FakeConnector(pg_uri, **kw), secret_client=secrets
    )
    connector = FakeConnector.made[-1]
    assert summary.metrics["rows"] == 50 and summary.metrics["inserted"] == 50
    assert secrets.names == ["projects/p/secrets/db-password/versions/latest"]
    instance, driver, kwargs = connector.calls[0]
    assert (instance, driver) == ("projects/p/locations/us-central1/clusters/c/instances/i", "pg8000")
    assert kwargs == {"user": "embedpipe", "db": "postgres", "password": "s3cret"}
    assert connector.kwargs == {"ip_type": "PRIVATE", "enable_iam_auth": False} and connector.closed
    assert "s3cret" not in summary.markdown() and "s3cret" not in json.dumps(summary.metrics)
    # a re-run goes through the staging table with text COPY over pg8000
    again = upload_vectors(
        str(vectors), config, connector_factory=lambda **kw: FakeConnector(pg_uri, **kw), secret_client=secrets
    )
    assert (again.metrics["inserted"], again.metrics["updated"], again.metrics["unchanged"]) == (0, 0, 50)
    factory = config.connection(
        connector_factory=lambda **kw: FakeConnector(pg_uri, **kw), secret_client=secrets
    ).connection_factory()
    assert (
        search_vector(factory, make_batch(20, dim=8, seed=2, prefix="e").embeddings[4], table=table, k=1)[0].id == "e4"
    )


def test_cloudsql_with_iam_auth(pg_uri, vectors):
    table = f"c_{uuid.uuid4().hex[:8]}"
    config = UploadConfig(target="cloudsql", instance="p:us-central1:i", user="sa@p.iam", iam_auth=True, table=table)
    summary = upload_vectors(str(vectors), config, connector_factory=lambda **kw: FakeConnector(pg_uri, **kw))
    connector = FakeConnector.made[-1]
    assert summary.metrics["rows"] == 50
    assert connector.kwargs["enable_iam_auth"] is True
    assert connector.calls[0][2] == {"user": "sa@p.iam", "db": "postgres", "enable_iam_auth": True}


def test_passwords_never_in_clear(monkeypatch):
    with pytest.raises(ConnectionConfigError, match="password in clear"):
        UploadConfig(database_uri="postgresql://u:hunter2@db/x").check()
    assert redact_uri("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    monkeypatch.setenv("DB_PASSWORD", "pw")
    assert resolve_password("DB_PASSWORD") == "pw"
    with pytest.raises(ConnectionConfigError, match="NOT_SET"):
        resolve_password("NOT_SET")
    with pytest.raises(ConnectionConfigError, match="projects/PROJECT/secrets"):
        resolve_password(password_secret="db-password", secret_client=FakeSecrets())
    with pytest.raises(ConnectionConfigError, match="needs password_env or password_secret"):
        ConnectionSettings(
            target="alloydb", instance="projects/p/locations/l/clusters/c/instances/i", connector_factory=FakeConnector
        ).connection_factory()
    with pytest.raises(ConnectionConfigError, match="project:region:instance"):
        ConnectionSettings(target="cloudsql", instance="nope").check()


def test_uri_password_from_env(pg_uri, vectors, monkeypatch):
    monkeypatch.setenv("PGPW", "ignored-by-trust-auth")
    table = f"u_{uuid.uuid4().hex[:8]}"
    summary = upload_vectors(str(vectors), UploadConfig(database_uri=pg_uri, password_env="PGPW", table=table))
    assert summary.metrics["rows"] == 50


def test_bigquery_load_job_and_merge(vectors):
    client = FakeBigQuery()
    summary = upload_vectors(
        str(vectors), UploadConfig(target="bigquery", table="proj.ds.vectors"), bigquery_client=client
    )
    table_id, config = client.loaded[0]
    table = client.loaded_tables[0]
    # a staging table of the run's own (issue 17), was `proj.ds.vectors_staging` for every run
    assert summary.metrics["rows"] == 50 and table_id.startswith("proj.ds.vectors_staging_")
    assert str(table.schema.field("embedding").type.value_type) == "double" and table.num_rows == 50
    assert config.source_format == "PARQUET" and config.parquet_options.enable_list_inference
    assert [(f.name, f.field_type, f.mode) for f in config.schema][1] == ("embedding", "FLOAT64", "REPEATED")
    merge = client.queries[-1]
    assert f"MERGE `proj.ds.vectors` T USING `{table_id}` S ON T.id = S.id" in merge
    with pytest.raises(ValueError, match="project.dataset.table"):
        upload_vectors(str(vectors), UploadConfig(target="bigquery", table="x; DROP TABLE y"), bigquery_client=client)


class FakeBucket:
    def __init__(self):
        self.uploaded = {}

    def blob(self, name):
        return SimpleNamespace(
            upload_from_filename=lambda path: self.uploaded.__setitem__(name, Path(path).read_text())
        )


def test_vertex_vector_search_files_and_update(vectors):
    bucket, updates = FakeBucket(), []
    gcs = SimpleNamespace(
        bucket=lambda name: bucket,
        list_blobs=lambda name, prefix, max_results: [k for k in bucket.uploaded if k.startswith(prefix)][
            :max_results
        ],
    )

    class FakeIndex:
        def __init__(self, index_name):
            self.index_name = index_name

        def update_embeddings(self, contents_delta_uri, is_complete_overwrite=None):
            updates.append((self.index_name, contents_delta_uri, is_complete_overwrite))

    config = UploadConfig(
        target="vertex_vector_search",
        vector_search_index="projects/p/locations/l/indexes/123",
        contents_delta_uri="gs://bucket/delta/run1",
    )
    summary = upload_vectors(str(vectors), config, gcs_client=gcs, index_class=FakeIndex)
    assert summary.metrics["rows"] == 50
    assert updates == [("projects/p/locations/l/indexes/123", "gs://bucket/delta/run1", False)]
    lines = [json.loads(line) for line in bucket.uploaded["delta/run1/embeddings-00000.json"].splitlines()]
    assert len(lines) == 50
    assert lines[1]["id"] == "d1" and len(lines[1]["embedding"]) == 8
    assert lines[1]["restricts"] == [{"namespace": "group", "allow": ["odd"]}]
    assert lines[1]["numeric_restricts"] == [{"namespace": "n", "value_int": 1}]
    listing = [json.loads(line) for line in bucket.uploaded["delta/run1.ids.jsonl"].splitlines()]
    assert len(listing) == 50 and "e19" in listing  # beside the contents folder, not in it
    with pytest.raises(ValueError, match="gs://bucket/delta/run1 has files already"):  # they would be applied again
        upload_vectors(str(vectors), config, gcs_client=gcs, index_class=FakeIndex)
    assert len(updates) == 1
