"""Library tier, no model: parsing records, chunk windows, hashes, input resolution, Dataflow options."""

import json

import pandas as pd
import pytest
from google.protobuf import json_format

from embedpipe.embed import documents as docs
from embedpipe.embed.dataflow import gcp_resources_json
from embedpipe.embed.job import resolve_input
from embedpipe.embed.settings import DataflowSettings
from embedpipe.embed.types import Document, VectorRow
from embedpipe.images import DATAFLOW_IMAGE


def test_parse_record_accepts_beir_and_prepared_rows():
    assert docs.parse_record({"_id": 3, "text": "t"}) == Document(id="3", title="", text="t", metadata={})
    prepared = {"_id": "d", "title": "T", "text": "t", "metadata": '{"year": 2020}'}
    assert docs.parse_record(prepared).metadata == {"year": 2020}


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"_id": "d", "text": "   "}, "field 'text' is empty"),
        ({"_id": "d"}, "field 'text' is missing"),
        ({"_id": "d", "text": 5}, "field 'text' is a int, not a string"),
        ({"text": "t"}, "field '_id' is missing"),
        ({"_id": "d", "text": "t", "metadata": "[1]"}, "field 'metadata' must be a JSON object"),
        ({"_id": "d", "text": "t", "metadata": "{oops"}, "not valid JSON"),
    ],
)
def test_bad_records_become_dead_letters_with_the_reason(record, reason):
    dead = docs.parse_record(record)
    assert docs.is_dead_letter(dead) and reason in dead.reason


def test_bad_json_lines_become_dead_letters():
    assert "invalid JSON" in docs.parse_json_line("{nope").reason
    assert "expected a JSON object" in docs.parse_json_line("[1, 2]").reason


def test_chunk_windows_overlap_by_the_given_number_of_tokens():
    offsets = [(i * 2, i * 2 + 1) for i in range(10)]  # ten one-character tokens: "a b c ..."
    spans = docs.chunk_spans(offsets, chunk_tokens=4, overlap=1)
    # token windows [0,4) [3,7) [6,10): each starts on the last token of the one before
    assert spans == [(0, 7), (6, 13), (12, 19)]
    assert docs.chunk_spans(offsets[:3], chunk_tokens=4, overlap=1) == [(0, 5)]
    assert docs.chunk_spans([], chunk_tokens=4, overlap=0) == []


@pytest.mark.parametrize(
    "tokens, overlap, message",
    [(-1, 0, "chunk_tokens must be 0"), (8, 8, "must be smaller"), (0, 2, "needs chunk_tokens"), (8, -1, "0 or more")],
)
def test_bad_chunking_parameters_are_explained(tokens, overlap, message):
    with pytest.raises(ValueError, match=message):
        docs.check_chunking(tokens, overlap)


def test_content_hash_changes_with_text_model_and_chunking():
    base = docs.content_hash("title text", "model-a")
    assert base == docs.content_hash("title text", "model-a")
    assert (
        len(
            {
                base,
                docs.content_hash("title text!", "model-a"),
                docs.content_hash("title text", "model-b"),
                docs.content_hash("title text", "model-a", "chunk=64,overlap=8"),
            }
        )
        == 4
    )


def test_document_id_of_a_chunk_comes_from_its_metadata():
    assert docs.document_id_of(VectorRow("d#2", [], None, json.dumps({"document_id": "d", "chunk": 2}))) == "d"
    assert docs.document_id_of(VectorRow("d", [], None, "{}")) == "d"


def test_resolve_input_reads_files_folders_and_parquet_without_extension(tmp_path):
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text('{"_id": "a", "text": "x"}\n')
    assert resolve_input(str(jsonl)) == (str(jsonl), "jsonl")
    artifact = tmp_path / "corpus"  # a KFP Dataset artifact: Parquet, no extension
    pd.DataFrame({"_id": ["a"], "text": ["x"]}).to_parquet(artifact)
    assert resolve_input(str(artifact)) == (str(artifact), "parquet")
    shards = tmp_path / "vectors"
    shards.mkdir()
    (shards / "_dead_letters").mkdir()
    for i in range(2):
        pd.DataFrame({"id": ["a"]}).to_parquet(shards / f"vectors-0000{i}-of-00002.parquet")
    assert resolve_input(str(shards), expect="parquet") == (f"{shards}/*.parquet", "parquet")
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_input(str(tmp_path / "missing"))
    (shards / "extra.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="mixes Parquet and JSONL"):
        resolve_input(str(shards))


def test_dataflow_args_name_our_image_gpus_and_network():
    args = DataflowSettings(
        project="proj",
        location="europe-west4",
        temp_location="gs://bucket/tmp",
        job_name="Embed Corpus 1",
        service_account="sa@proj.iam.gserviceaccount.com",
        network="vpc",
        subnetwork="regions/europe-west4/subnetworks/sub",
        machine_type="g2-standard-8",
        max_workers=4,
        accelerator_type="nvidia-l4",
        accelerator_count=1,
    ).beam_args()
    assert args == [
        "--runner=DataflowRunner",
        "--project=proj",
        "--region=europe-west4",
        "--temp_location=gs://bucket/tmp",
        "--job_name=embed-corpus-1",
        f"--sdk_container_image={DATAFLOW_IMAGE}",
        "--sdk_location=container",
        "--experiments=use_runner_v2",
        "--service_account_email=sa@proj.iam.gserviceaccount.com",
        "--network=vpc",
        "--subnetwork=regions/europe-west4/subnetworks/sub",
        "--machine_type=g2-standard-8",
        "--max_num_workers=4",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
    ]
    with pytest.raises(ValueError, match="gs:// temp_location"):
        DataflowSettings(project="p", location="r", temp_location="/tmp").beam_args()


def test_gcp_resources_is_gcpc_s_format():
    from google_cloud_pipeline_components.proto import gcp_resources_pb2

    parsed = json_format.Parse(
        gcp_resources_json("p", "us-central1", "2026-01-01_00_00_00-123"), gcp_resources_pb2.GcpResources()
    )
    assert parsed.resources[0].resource_type == "DataflowJob"
    assert parsed.resources[0].resource_uri == (
        "https://dataflow.googleapis.com/v1b3/projects/p/locations/us-central1/jobs/2026-01-01_00_00_00-123"
    )


def test_a_line_that_is_not_utf8_is_a_dead_letter_naming_file_and_line():
    dead = docs.parse_json_line(b'{"_id": "d1", "text": "caf\xe9"}', "gs://b/corpus.jsonl:7")
    assert docs.is_dead_letter(dead) and dead.source == "gs://b/corpus.jsonl:7"
    assert dead.reason.startswith("gs://b/corpus.jsonl:7: not valid UTF-8 (")
    assert "byte 0xe9 at byte 27 of the line" in dead.reason
    assert dead.record == '{"_id": "d1", "text": "caf\\xe9"}' and dead.to_dict()["source"] == "gs://b/corpus.jsonl:7"
    bad_json = docs.parse_json_line(b"{nope", "c.jsonl:3")
    assert bad_json.source == "c.jsonl:3" and bad_json.reason.startswith("invalid JSON")
    good = docs.parse_json_line('{"_id": "d1", "text": "café"}'.encode(), "c.jsonl:1")
    assert not docs.is_dead_letter(good) and good.text == "café"
    assert "source" not in docs.parse_json_line("{nope").to_dict()  # read otherwise (streaming): no source


def test_numbered_lines_count_every_line_and_skip_blank_ones(tmp_path):
    import gzip
    from types import SimpleNamespace

    from embedpipe.embed.reading import numbered_lines

    content = b'{"a": 1}\r\n\n   \n{"b": "\xff"}\n{"c": 3}'
    plain, packed = tmp_path / "c.jsonl", tmp_path / "c.jsonl.gz"
    plain.write_bytes(content)
    packed.write_bytes(gzip.compress(content))
    expected = [(":1", b'{"a": 1}'), (":4", b'{"b": "\xff"}'), (":5", b'{"c": 3}')]
    for path, opener in ((plain, open), (packed, gzip.open)):
        readable = SimpleNamespace(metadata=SimpleNamespace(path=str(path)), open=lambda p=path, o=opener: o(p, "rb"))
        assert list(numbered_lines(readable)) == [(str(path) + n, line) for n, line in expected]
