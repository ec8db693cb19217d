"""Generated `:predict` bodies: a 4xx with a JSON error or a valid 200 answer, never a 5xx, never a traceback.

Two targets: `parse_request` alone (any JSON value: a PredictRequest or a PredictError, nothing else) and the
FastAPI app in process (TestClient) serving the packaged MiniLM, sent raw bytes: valid bodies, random JSON,
deep nesting, huge numbers, wrong types, lone surrogates and bytes that are not UTF-8.
"""

import json
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from embedpipe.prompts import TASK_TYPES, resolve_prompts
from embedpipe.serving import PredictError, PredictRequest, ServingConfig, ServingLimits, create_app, parse_request

DIMENSION = 384
# Small limits, so the 413 and the character refusal are reachable with small examples (the body limit still
# lets 100,000 levels of `[` reach the JSON parser).
LIMITS = ServingLimits(max_body_bytes=400_000, max_instances=8, max_characters=300, deadline_s=60)
KEYS = ["instances", "parameters", "content", "task_type", "title", "autoTruncate", "outputDimensionality"]

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
texts = st.text(st.characters(codec="utf-8"), max_size=40) | st.lists(
    st.text(max_size=5) | surrogates, max_size=6
).map("".join)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(30, 4000).map(lambda digits: 10**digits - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | st.sampled_from(list(TASK_TYPES) + ["DEFAULT", "", "retrieval_document"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | texts, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def valid_instances(draw):
    task_type = draw(st.sampled_from([None, "", *TASK_TYPES, "DEFAULT"]))
    instance = {"content": draw(st.text(min_size=1, max_size=30).filter(str.strip))}
    if task_type is not None:
        instance["task_type"] = task_type
    if task_type == "RETRIEVAL_DOCUMENT" and draw(st.booleans()):
        instance["title"] = draw(st.text(max_size=20))
    return instance


@st.composite
def valid_bodies(draw):
    body = {"instances": draw(st.lists(valid_instances(), min_size=1, max_size=4))}
    parameters = draw(
        st.fixed_dictionaries(
            {},
            optional={"autoTruncate": st.just(True), "outputDimensionality": st.integers(1, DIMENSION)},
        )
    )
    if parameters:
        body["parameters"] = parameters
    return body


@st.composite
def broken_bodies(draw):
    """A valid body with one part replaced by anything JSON can carry."""
    body = draw(valid_bodies())
    where = draw(st.sampled_from(["instances", "instance", "field", "parameters", "parameter", "body"]))
    junk = draw(json_values)
    if where == "body":
        return junk
    if where == "instances":
        body["instances"] = junk
    elif where == "instance":
        body["instances"][draw(st.integers(0, len(body["instances"]) - 1))] = junk
    elif where == "field":
        body["instances"][0][draw(st.sampled_from(["content", "task_type", "title"]))] = junk
    elif where == "parameters":
        body["parameters"] = junk
    else:
        body["parameters"] = {draw(st.sampled_from(["autoTruncate", "outputDimensionality"])): junk}
    return body


def encoded(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # ensure_ascii: a lone surrogate travels as \ud800


def nested(depth: int, objects: bool) -> bytes:
    opening, closing = (b'{"instances":', b"}") if objects else (b"[", b"]")
    return opening * depth + b"1" + closing * depth


def with_dimension(number: bytes) -> bytes:
    return b'{"instances":[{"content":"a"}],"parameters":{"outputDimensionality":' + number + b"}}"


raw_bodies = st.one_of(
    valid_bodies().map(encoded),
    broken_bodies().map(encoded),
    json_values.map(encoded),
    st.binary(max_size=200),
    st.builds(nested, st.sampled_from([500, 999, 1_000, 5_000, 100_000]) | st.integers(1, 200_000), st.booleans()),
    st.integers(1, 6000).map(lambda digits: with_dimension(b"9" * digits)),
    st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"1e-400", b"256.0"]).map(with_dimension),
    texts.map(lambda text: encoded({"instances": [{"content": "ok"}, {"content": "x" + text}]})),
    st.integers(1, 2 * LIMITS.max_instances).map(lambda count: encoded({"instances": [{"content": "a"}] * count})),
    st.integers(250, 250_000).map(lambda size: encoded({"instances": [{"content": "w " * size}]})),
    valid_bodies().map(lambda body: encoded(body)[:-1]),
)


@given(json_values | valid_bodies() | broken_bodies())
def test_the_parser_answers_a_request_or_a_predict_error(body):
    prompts = lambda task_type: resolve_prompts(task_type, {})  # noqa: E731
    try:
        request = parse_request(body, dimension=DIMENSION, prompts=prompts, limits=LIMITS)
    except PredictError as err:
        message = str(err)
        assert message and "Traceback" not in message and len(message) < 1000
        return
    assert isinstance(request, PredictRequest) and len(request.texts) == len(body["instances"])


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    from embedpipe.models import load_model

    model = load_model("default", device="cpu")
    config = ServingConfig("default", 0, "/health", "/predict", limits=LIMITS)
    with TestClient(create_app(config, load_model=lambda reference, **kwargs: model)) as running:
        deadline = time.monotonic() + 60
        while running.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.05)
        yield running


# The fault-injection review's cases run in every run, whatever Hypothesis draws.
@given(raw_bodies)
@example(nested(100_000, objects=False))
@example(nested(1_000, objects=True))
@example(with_dimension(b"1e400"))
@example(with_dimension(b"9" * 5000))
@example(with_dimension(b"9" * 4000))
@example(b'{"instances":[{"content":"ok"},{"content":"x \\ud800"}]}')
@example(b'{"instances":[{"content":"a \xff"}]}')
@example(encoded({"instances": [{"content": "w " * 250_000}]}))
def test_the_app_answers_4xx_with_a_json_error_or_a_valid_200_never_5xx(client, raw):
    response = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400, 413), (response.status_code, response.text[:300])
    answer = response.json()
    if response.status_code != 200:
        assert set(answer) == {"error"} and isinstance(answer["error"], str) and answer["error"]
        assert "Traceback" not in answer["error"] and 'File "' not in answer["error"]
        return
    body = json.loads(raw)
    assert len(answer["predictions"]) == len(body["instances"])
    size = (body.get("parameters") or {}).get("outputDimensionality") or DIMENSION
    for prediction in answer["predictions"]:
        values = prediction["embeddings"]["values"]
        assert len(values) == size and abs(sum(v * v for v in values) - 1.0) < 1e-3
    assert isinstance(answer["metadata"]["billableCharacterCount"], int)
