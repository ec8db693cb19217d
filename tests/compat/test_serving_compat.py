"""Vertex AI's documented predict requests, sent unchanged over HTTP to the serving container's app.

Each request body in `fixtures/serving/` is what an existing Vertex AI user sends to a text-embedding
model's `:predict` (sources in `fixtures/serving/README.md`); the answers must have the documented shape
(`fixtures/serving/predict.response.json`), the values the model gives the texts with their task types'
prompts, and `metadata.billableCharacterCount` as Vertex counts it. The server runs the packaged MiniLM
(no prompts, 384 dimensions, 256 tokens) on a loopback port, as `tests/serving` runs it.
"""

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from embedpipe.models import load_model
from embedpipe.prompts import resolve_prompts
from embedpipe.serving import ServingConfig, create_app
from tests.http_client import VERTEX_EXAMPLES, call

FIXTURES = Path(__file__).parent / "fixtures" / "serving"
DIMENSION = 384


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def billable(instances: list[dict]) -> int:
    """Vertex: characters counted by UTF-8 code points, white space excluded."""
    return sum(len("".join(instance["content"].split())) for instance in instances)


def formatted(model, instance: dict) -> str:
    """The text the model embeds for an instance: its task type's prompts (RETRIEVAL_QUERY when none)."""
    prompts = resolve_prompts(instance.get("task_type") or "RETRIEVAL_QUERY", model.prompts)
    if prompts.task_type == "RETRIEVAL_DOCUMENT":
        return prompts.format_documents([instance["content"]], [instance.get("title") or ""])[0]
    return prompts.format_queries([instance["content"]])[0]


@pytest.fixture(scope="module")
def model():
    return load_model("default", device="cpu")


@pytest.fixture(scope="module")
def url(model):
    """The app on a free loopback port, routes as Vertex sets them through AIP_* for a deployed model."""
    import uvicorn

    config = ServingConfig("default", 0, "/v1/endpoints/123/health", "/v1/endpoints/123:predict")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(config, load_model=lambda reference, **kwargs: model)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/v1/endpoints/123"
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(base + "/health", timeout=5)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the serving app did not become healthy"
        time.sleep(0.1)
    yield base + ":predict"
    server.should_exit = True
    thread.join(timeout=10)


def assert_documented_shape(answer: dict, instances: int, dimension: int) -> None:
    """The keys and types of `predict.response.json`, nothing missing and nothing else."""
    documented = fixture("predict.response.json")
    assert set(answer) == set(documented)
    assert set(answer["metadata"]) == set(documented["metadata"])
    assert isinstance(answer["metadata"]["billableCharacterCount"], int)
    assert len(answer["predictions"]) == instances
    shape = documented["predictions"][0]
    for prediction in answer["predictions"]:
        assert set(prediction) == set(shape)
        assert set(prediction["embeddings"]) == set(shape["embeddings"])
        statistics = prediction["embeddings"]["statistics"]
        assert set(statistics) == set(shape["embeddings"]["statistics"])
        assert isinstance(statistics["token_count"], int) and statistics["token_count"] > 0
        assert isinstance(statistics["truncated"], bool)
        values = prediction["embeddings"]["values"]
        assert len(values) == dimension and all(isinstance(v, float) for v in values)
        assert abs(float(np.linalg.norm(values)) - 1.0) < 1e-4


def test_the_fixture_is_the_workplace_s_predict_example():
    shared = VERTEX_EXAMPLES / "predict.request.json"
    if not shared.exists():
        pytest.skip("no ../shared/vertex-examples here (the fixture is a copy)")
    assert fixture("predict.request.json") == json.loads(shared.read_text())


@pytest.mark.parametrize(
    "name",
    [
        "predict.request.json",
        "predict.retrieval_document.request.json",
        "predict.task_types.request.json",
        "predict.empty_title.request.json",
    ],
)
def test_documented_requests_are_answered_with_the_documented_shape_and_the_model_s_vectors(url, model, name):
    body = fixture(name)
    status, answer = call(url, body)
    assert status == 200, answer
    instances = body["instances"]
    assert_documented_shape(answer, len(instances), DIMENSION)
    assert answer["metadata"]["billableCharacterCount"] == billable(instances)
    texts = [formatted(model, instance) for instance in instances]
    want = model.encode(texts, prompt="", normalize_embeddings=True, convert_to_numpy=True)
    got = np.array([p["embeddings"]["values"] for p in answer["predictions"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    counts = [len(model.tokenizer(text)["input_ids"]) for text in texts]
    assert [p["embeddings"]["statistics"]["token_count"] for p in answer["predictions"]] == counts


def test_hello_world_bills_eleven_characters(url):
    assert call(url, fixture("predict.request.json"))[1]["metadata"] == {"billableCharacterCount": 11}


def test_parameters_output_dimensionality_and_auto_truncate(url, model):
    body = fixture("predict.parameters.request.json")
    status, answer = call(url, body)
    assert status == 200, answer
    size = body["parameters"]["outputDimensionality"]
    assert_documented_shape(answer, 1, size)
    full = model.encode([formatted(model, body["instances"][0])], prompt="", normalize_embeddings=True)[0][:size]
    np.testing.assert_allclose(
        answer["predictions"][0]["embeddings"]["values"], full / np.linalg.norm(full), atol=1e-5
    )


def test_an_over_long_text_without_auto_truncate_is_invalid_argument_naming_the_instance(url):
    status, answer = call(url, fixture("predict.no_auto_truncate.request.json"))
    assert status == 400
    assert "instances[0].content" in answer["error"] and "autoTruncate is false" in answer["error"]
    body = fixture("predict.no_auto_truncate.request.json")
    body["parameters"]["autoTruncate"] = True  # Vertex's default: truncated silently, and said so
    status, answer = call(url, body)
    assert status == 200 and answer["predictions"][0]["embeddings"]["statistics"]["truncated"] is True
