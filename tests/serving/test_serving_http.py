"""The serving endpoint over real HTTP on a loopback port, as Vertex AI would call it."""

import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from embedpipe.models import load_model, packaged_model_path
from embedpipe.prompts import resolve_prompts
from embedpipe.serving import MAX_INSTANCES, ServingConfig, create_app

GEMMA_STYLE_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


class Server:
    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def call(self, method, route, body=None):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{route}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def wait_healthy(self, route="/health"):
        deadline = time.monotonic() + 60
        while self.call("GET", route)[0] != 200:
            assert time.monotonic() < deadline, "model never loaded"
            time.sleep(0.1)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def gemma_style_model(tmp_path_factory):
    """The packaged MiniLM with EmbeddingGemma-style prompts, so prompt handling is visible."""
    folder = tmp_path_factory.mktemp("model") / "minilm-prompts"
    shutil.copytree(packaged_model_path(), folder)
    config_path = folder / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config["prompts"] = GEMMA_STYLE_PROMPTS
    config_path.write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def server(gemma_style_model):
    config = ServingConfig(model=gemma_style_model, port=0, health_route="/v1/health", predict_route="/v1/predict")
    running = Server(create_app(config))
    running.wait_healthy("/v1/health")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def reference(gemma_style_model):
    return load_model(gemma_style_model, device="cpu")


def encode_reference(model, texts):
    return model.encode(texts, prompt="", normalize_embeddings=True, convert_to_numpy=True)


def test_values_equal_encode_with_the_task_prompt(server, reference):
    status, body = server.call(
        "POST",
        "/v1/predict",
        {
            "instances": [
                {"content": "what is pgvector?"},
                {
                    "content": "pgvector adds vector search to Postgres.",
                    "task_type": "RETRIEVAL_DOCUMENT",
                    "title": "pgvector",
                },
                {"content": "cats and dogs", "task_type": "CLUSTERING"},
            ]
        },
    )
    assert status == 200
    got = np.array([p["embeddings"]["values"] for p in body["predictions"]])
    want = encode_reference(
        reference,
        [
            "task: search result | query: what is pgvector?",
            "title: pgvector | text: pgvector adds vector search to Postgres.",
            "task: clustering | query: cats and dogs",
        ],
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_default_task_type_empty_titles_and_blank_task_types_as_vertex_clients_send_them(server, reference):
    status, body = server.call(
        "POST",
        "/v1/predict",
        {
            "instances": [
                {"content": "cats and dogs", "task_type": "DEFAULT"},
                {"content": "what is pgvector?", "title": ""},
                {"content": "what is pgvector?", "task_type": "", "title": None},
                {"content": "what is pgvector?", "task_type": None},
                {"content": "pgvector adds vector search.", "task_type": "retrieval_document", "title": ""},
                {"content": "cats and dogs", "task_type": "CLUSTERING", "title": ""},
            ]
        },
    )
    assert status == 200, body
    got = np.array([p["embeddings"]["values"] for p in body["predictions"]])
    query = "task: search result | query: what is pgvector?"
    want = encode_reference(
        reference,
        [
            # DEFAULT: whatever prompts embedpipe.prompts gives it (serving adds no rule of its own)
            resolve_prompts("DEFAULT", GEMMA_STYLE_PROMPTS).format_queries(["cats and dogs"])[0],
            query,
            query,  # "" and null task types are RETRIEVAL_QUERY, as Vertex documents
            query,
            "title: none | text: pgvector adds vector search.",
            "task: clustering | query: cats and dogs",
        ],
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_billable_character_count_is_the_contents_characters_without_white_space(server):
    instances = [
        {"content": "Hello World!"},
        {"content": " Grüße,\tWelt ", "task_type": "RETRIEVAL_DOCUMENT", "title": "a title is not counted"},
        {"content": "日本語 テキスト", "task_type": "DEFAULT"},
    ]
    status, body = server.call("POST", "/v1/predict", {"instances": instances})
    assert status == 200
    assert body["metadata"] == {"billableCharacterCount": 11 + 10 + 7}
    assert len(body["predictions"]) == 3


def test_token_count_and_truncated(server, reference):
    long_text = "embedding " * 400
    status, body = server.call(
        "POST", "/v1/predict", {"instances": [{"content": "hello world"}, {"content": long_text}]}
    )
    assert status == 200
    stats = [p["embeddings"]["statistics"] for p in body["predictions"]]
    tokenizer = reference.tokenizer
    assert stats[0] == {
        "token_count": len(tokenizer("task: search result | query: hello world")["input_ids"]),
        "truncated": False,
    }
    assert stats[1]["truncated"] is True and stats[1]["token_count"] > reference.max_seq_length


def test_output_dimensionality_truncates_and_renormalises(server, reference):
    status, body = server.call(
        "POST", "/v1/predict", {"instances": [{"content": "hi"}], "parameters": {"outputDimensionality": 64}}
    )
    assert status == 200
    values = np.array(body["predictions"][0]["embeddings"]["values"])
    full = encode_reference(reference, ["task: search result | query: hi"])[0][:64]
    np.testing.assert_allclose(values, full / np.linalg.norm(full), atol=1e-5)


BAD_REQUESTS = {
    "empty instances": ({"instances": []}, "non-empty list"),
    "no instances": ({"parameters": {}}, "non-empty list"),
    "too many instances": ({"instances": [{"content": "x"}] * (MAX_INSTANCES + 1)}, "too many instances"),
    "missing content": ({"instances": [{"text": "x"}]}, "instances[0].content"),
    "unknown task type": (
        {"instances": [{"content": "x", "task_type": "SUMMARIZE"}]},
        "task_type 'SUMMARIZE' is unknown",
    ),
    "title on a query": (
        {"instances": [{"content": "x", "title": "t"}]},
        "only valid with task_type RETRIEVAL_DOCUMENT",
    ),
    "too long without autoTruncate": (
        {"instances": [{"content": "word " * 400}], "parameters": {"autoTruncate": False}},
        "autoTruncate is false",
    ),
    "too long without autoTruncate names the instance": (
        {"instances": [{"content": "short"}, {"content": "word " * 400}], "parameters": {"autoTruncate": False}},
        "instances[1].content is ",
    ),
    "autoTruncate not a boolean": (
        {"instances": [{"content": "x"}], "parameters": {"autoTruncate": "false"}},
        "parameters.autoTruncate must be true or false",
    ),
    "parameters not an object": ({"instances": [{"content": "x"}], "parameters": [1]}, "'parameters' must be"),
    "dimension not a number": (
        {"instances": [{"content": "x"}], "parameters": {"outputDimensionality": "256"}},
        "parameters.outputDimensionality must be an integer from 1 to 384",
    ),
    "dimension zero": (
        {"instances": [{"content": "x"}], "parameters": {"outputDimensionality": 0}},
        "parameters.outputDimensionality",
    ),
    "content not a string": ({"instances": [{"content": "x"}, {"content": 5}]}, "instances[1].content"),
    "blank content": ({"instances": [{"content": "  "}]}, "instances[0].content must be a non-empty string"),
    "instance not an object": ({"instances": [{"content": "x"}, "y"]}, "instances[1] must be an object"),
    "task type not a string": (
        {"instances": [{"content": "x", "task_type": 3}]},
        "instances[0].task_type must be a string",
    ),
    "title not a string": (
        {"instances": [{"content": "x", "task_type": "RETRIEVAL_DOCUMENT", "title": 7}]},
        "instances[0].title must be a string",
    ),
    "title on a DEFAULT instance": (
        {"instances": [{"content": "x"}, {"content": "y", "task_type": "DEFAULT", "title": "t"}]},
        "instances[1].title is only valid with task_type RETRIEVAL_DOCUMENT",
    ),
    "unpaired surrogate": (b'{"instances": [{"content": "x \\ud800"}]}', "instances[0].content is not valid Unicode"),
    "deeply nested json": (b"[" * 100000 + b"]" * 100000, "malformed JSON"),
    "dimension above the model's": (
        {"instances": [{"content": "x"}], "parameters": {"outputDimensionality": 385}},
        "1 to 384",
    ),
    "malformed json": (b'{"instances": [', "malformed JSON"),
    "not an object": ([1, 2], "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_400_and_the_server_keeps_serving(server, case):
    body, message = BAD_REQUESTS[case]
    status, answer = server.call("POST", "/v1/predict", body)
    assert status == 400 and message in answer["error"]
    assert server.call("POST", "/v1/predict", {"instances": [{"content": "still here"}]})[0] == 200


def test_every_refusal_is_a_400_never_a_500(server):
    for case in sorted(BAD_REQUESTS):
        status, answer = server.call("POST", "/v1/predict", BAD_REQUESTS[case][0])
        assert status == 400, (case, answer)


def test_a_gated_model_s_token_comes_from_secret_manager_for_the_load_only(monkeypatch, caplog, capfd):
    from google.cloud import secretmanager

    from tests.unit.test_model_access import SECRET, TOKEN, FakeSecrets

    secrets = FakeSecrets()
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", lambda *args, **kwargs: secrets)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("EMBEDPIPE_HF_TOKEN_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    seen = {}

    def loader(reference, **kwargs):
        seen["HF_TOKEN"] = os.environ.get("HF_TOKEN")
        return load_model("default", device="cpu")

    config = ServingConfig.from_env("default", 0)
    assert config.hf_token_secret == SECRET
    running = Server(create_app(config, load_model=loader))
    try:
        running.wait_healthy()
        assert running.call("POST", "/predict", {"instances": [{"content": "x"}]})[0] == 200
    finally:
        running.stop()
    assert seen["HF_TOKEN"] == TOKEN and "HF_TOKEN" not in os.environ and secrets.names == [SECRET]

    secrets.error = PermissionError("403 Permission 'secretmanager.versions.access' denied")
    running = Server(create_app(config, load_model=loader))
    try:
        deadline = time.monotonic() + 30
        while "Secret Manager" not in (detail := running.call("GET", "/health")[1].get("detail", "")):
            assert time.monotonic() < deadline, detail
            time.sleep(0.05)
        assert SECRET in detail and "denied" in detail
    finally:
        running.stop()
    out, err = capfd.readouterr()
    assert TOKEN not in caplog.text + out + err


def test_health_is_503_until_the_model_is_loaded():
    release = threading.Event()

    def slow_loader(reference, **kwargs):
        release.wait(30)
        return load_model("default", device="cpu")

    running = Server(create_app(ServingConfig("default", 0, "/health", "/predict"), load_model=slow_loader))
    try:
        assert running.call("GET", "/health")[0] == 503
        assert running.call("POST", "/predict", {"instances": [{"content": "x"}]})[0] == 503
        release.set()
        running.wait_healthy()
        assert running.call("POST", "/predict", {"instances": [{"content": "x"}]})[0] == 200
    finally:
        release.set()
        running.stop()


def test_a_model_that_does_not_load_keeps_health_at_503_with_the_reason(tmp_path):
    running = Server(create_app(ServingConfig(str(tmp_path / "missing"), 0, "/health", "/predict")))
    try:
        deadline = time.monotonic() + 30
        while True:
            status, body = running.call("GET", "/health")
            if "does not exist" in body.get("detail", "") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == 503 and "does not exist" in body["detail"]
    finally:
        running.stop()


def test_serving_config_reads_vertex_variables_when_called(monkeypatch):
    monkeypatch.setenv("AIP_HTTP_PORT", "9123")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/endpoints/1/health")
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/1:predict")
    monkeypatch.setenv("AIP_STORAGE_URI", "gs://bucket/model")
    monkeypatch.delenv("EMBEDPIPE_HF_TOKEN_SECRET", raising=False)
    assert ServingConfig.from_env() == ServingConfig(
        "gs://bucket/model", 9123, "/v1/endpoints/1/health", "/v1/endpoints/1:predict"
    )


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(server, reference):
    """Many clients at once: every answer is 200 and belongs to its own request (no mixing, no races)."""
    texts = [f"query number {i} about {'cells ' * (i % 7)}" for i in range(48)]
    results: dict[int, tuple] = {}

    def client(k):
        for i in range(k, len(texts), 8):
            results[i] = server.call(
                "POST", "/v1/predict", {"instances": [{"content": texts[i]}, {"content": "fixed"}]}
            )

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(len(texts)))
    assert all(status == 200 for status, _ in results.values())
    want = encode_reference(reference, ["task: search result | query: " + t for t in texts])
    got = np.array([results[i][1]["predictions"][0]["embeddings"]["values"] for i in range(len(texts))])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_model_from_a_gs_storage_uri_is_copied_locally_at_start():
    """AIP_STORAGE_URI as Vertex sets it, through a fake storage client (no live GCS here)."""
    from tests.unit.test_storage import FakeClient

    folder = packaged_model_path()
    objects = {
        f"models/tuned/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    app = create_app(
        ServingConfig("gs://bucket/models/tuned", 0, "/health", "/predict"), gcs_client=FakeClient({"bucket": objects})
    )
    running = Server(app)
    try:
        running.wait_healthy()
        status, body = running.call("POST", "/predict", {"instances": [{"content": "hello"}]})
        assert status == 200 and len(body["predictions"][0]["embeddings"]["values"]) == 384
    finally:
        running.stop()
