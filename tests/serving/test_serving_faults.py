"""Faults at the endpoint: bad requests among good ones, texts the model cannot encode, limits, deadlines, a
model that does not load. Good requests must keep their exact answers; bad ones get a 4xx (or 504) naming
what is wrong; the batcher keeps serving."""

import http.client
import json
import logging
import threading
import time

import numpy as np
import pytest

from embedpipe.models import encode, load_model
from embedpipe.serving import (
    DeadlineExceeded,
    ItemFailed,
    MicroBatcher,
    ServingConfig,
    ServingLimits,
    create_app,
)
from tests.serving.test_serving_http import Server

LIMITS = ServingLimits(max_body_bytes=50_000, max_instances=16, max_characters=5_000, deadline_s=30)


@pytest.fixture(scope="module")
def model():
    return load_model("default", device="cpu")


@pytest.fixture(scope="module")
def server(model):
    running = Server(
        create_app(ServingConfig("default", 0, "/health", "/predict", limits=LIMITS), load_model=lambda r, **k: model)
    )
    running.wait_healthy()
    yield running
    running.stop()


def reference(model, texts):
    return encode(model, texts)


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class Gate:
    """An encode function that holds its first call until released, so the next requests queue up together."""

    def __init__(self, encode_fn):
        self.encode_fn, self.release, self.held, self.calls = encode_fn, threading.Event(), threading.Event(), []

    def __call__(self, texts):
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.held.set()
            self.release.wait(30)
        return self.encode_fn(texts)


def test_a_text_the_model_cannot_encode_fails_alone_and_the_rest_of_its_batch_is_answered(model):
    """A lone surrogate reaching the batcher (the tokenizer refuses it) among good requests in one batch."""
    gate = Gate(lambda texts: encode(model, texts))
    batcher = MicroBatcher(gate)
    results: dict[str, object] = {}

    def submit(name, texts):
        try:
            results[name] = batcher.encode(texts)
        except Exception as err:
            results[name] = err

    first = threading.Thread(target=submit, args=("first", ["warm up"]))
    first.start()
    gate.held.wait(10)
    jobs = {"good0": ["cats and dogs"], "bad": ["fine", "x \ud800"], "good1": ["pgvector", "search"]}
    threads = [threading.Thread(target=submit, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    wait_until(lambda: batcher.pending.qsize() == len(jobs))
    gate.release.set()
    for thread in [first, *threads]:
        thread.join(30)
    assert sorted(gate.calls[1]) == sorted(text for texts in jobs.values() for text in texts)  # one batch
    assert isinstance(results["bad"], ItemFailed) and results["bad"].index == 1
    for name in ("good0", "good1"):
        np.testing.assert_allclose(results[name], reference(model, jobs[name]), atol=1e-5)
    np.testing.assert_allclose(batcher.encode(["after"]), reference(model, ["after"]), atol=1e-5)


def test_a_request_past_its_deadline_gets_deadline_exceeded_and_is_never_encoded():
    gate = Gate(lambda texts: np.array([[float(len(t))] for t in texts]))
    batcher = MicroBatcher(gate)
    first = threading.Thread(target=batcher.encode, args=(["held"],))
    first.start()
    gate.held.wait(10)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline"):
        batcher.encode(["late"], deadline=started + 0.3)
    assert 0.25 < time.monotonic() - started < 5
    gate.release.set()
    first.join(10)
    assert batcher.encode(["next one"]).tolist() == [[8.0]]
    assert ["late"] not in gate.calls


class HeldModel:
    """The real model, whose encode waits while it is asked for "hold" (a model stuck on one batch)."""

    def __init__(self, model):
        self.model, self.release = model, threading.Event()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, **kwargs):
        if any("hold" in text for text in texts):
            self.release.wait(30)
        return self.model.encode(texts, **kwargs)


def test_a_request_waiting_past_the_deadline_gets_504_and_the_endpoint_keeps_serving(model):
    held = HeldModel(model)
    limits = ServingLimits(deadline_s=1.0)
    running = Server(
        create_app(ServingConfig("default", 0, "/health", "/predict", limits=limits), load_model=lambda r, **k: held)
    )
    try:
        running.wait_healthy()
        started = time.monotonic()
        status, answer = running.call("POST", "/predict", {"instances": [{"content": "hold on"}]})
        assert status == 504 and "deadline" in answer["error"] and "1 s" in answer["error"]
        assert time.monotonic() - started < 10
        held.release.set()
        status, answer = running.call("POST", "/predict", {"instances": [{"content": "after"}]})
        assert status == 200
        np.testing.assert_allclose(
            answer["predictions"][0]["embeddings"]["values"], reference(model, ["after"])[0], atol=1e-5
        )
    finally:
        held.release.set()
        running.stop()


BAD = {
    "malformed json": (b'{"instances": [', 400, "malformed JSON"),
    "lone surrogate": (b'{"instances": [{"content": "a \\ud800 b"}]}', 400, "instances[0].content"),
    "not utf-8": (b'{"instances": [{"content": "a \xff"}]}', 400, "not UTF-8"),
    "deep nesting": (b"[" * 20_000 + b"]" * 20_000, 400, "nested too deeply"),
    "huge integer": (
        b'{"instances": [{"content": "a"}], "parameters": {"outputDimensionality": ' + b"9" * 5000 + b"}}",
        400,
        "malformed JSON",
    ),
    "infinite dimension": (
        b'{"instances": [{"content": "a"}], "parameters": {"outputDimensionality": 1e400}}',
        400,
        "parameters.outputDimensionality",
    ),
    "too many characters": ({"instances": [{"content": "ok"}, {"content": "y" * 5_001}]}, 400, "instances[1].content"),
    "body too large": ({"instances": [{"content": "z " * 30_000}]}, 413, "larger than 50000 bytes"),
    "too long without autoTruncate": (
        {"instances": [{"content": "word " * 400}], "parameters": {"autoTruncate": False}},
        400,
        "instances[0].content is ",
    ),
    "too many instances": ({"instances": [{"content": "x"}] * 17}, 400, "at most 16"),
}


def test_bad_and_good_requests_mixed_under_concurrency(server, model):
    """8 clients, each sending good requests with bad ones in between: every good one exact, every bad one 4xx."""
    goods = [f"question {i} about {'cells ' * (i % 5)}" for i in range(40)]
    results: dict[tuple, tuple] = {}

    def client(k):
        bad = sorted(BAD)
        for i in range(k, len(goods), 8):
            results["good", i] = server.call("POST", "/predict", {"instances": [{"content": goods[i]}]})
            name = bad[i % len(bad)]
            results["bad", name, i] = server.call("POST", "/predict", BAD[name][0])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 * len(goods)
    for key, (status, answer) in results.items():
        if key[0] == "bad":
            _, expected_status, message = BAD[key[1]]
            assert status == expected_status and message in answer["error"], (key, status, answer)
    assert all(results["good", i][0] == 200 for i in range(len(goods)))
    got = np.array([results["good", i][1]["predictions"][0]["embeddings"]["values"] for i in range(len(goods))])
    np.testing.assert_allclose(got, reference(model, goods), atol=1e-5)


def test_a_long_text_is_cut_before_the_batcher_and_keeps_its_vector_and_token_count(server, model):
    text = "pgvector adds approximate nearest neighbour search to Postgres; " * 70  # ~1,000 tokens, 4,480 characters
    status, answer = server.call("POST", "/predict", {"instances": [{"content": text}, {"content": "short"}]})
    assert status == 200
    stats = answer["predictions"][0]["embeddings"]["statistics"]
    assert stats == {"token_count": len(model.tokenizer(text)["input_ids"]), "truncated": True}
    got = np.array([p["embeddings"]["values"] for p in answer["predictions"]])
    np.testing.assert_allclose(got, reference(model, [text, "short"]), atol=1e-5)


def test_a_body_over_the_limit_without_content_length_is_refused_while_it_streams(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b'{"instances": [{"content": "' + b"x" * 10_000 for _ in range(10))
    connection.request("POST", "/predict", body=chunks, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "larger than 50000 bytes" in json.loads(response.read())["error"]
    connection.close()
    assert server.call("POST", "/predict", {"instances": [{"content": "still here"}]})[0] == 200


def test_a_model_that_does_not_load_is_logged_with_its_reference_and_health_says_not_ready(caplog):
    def loader(reference, **kwargs):
        raise OSError(f"{reference} is not a sentence-transformers model folder")

    caplog.set_level(logging.INFO, logger="embedpipe.serving")
    running = Server(
        create_app(ServingConfig("gs://bucket/models/broken", 0, "/health", "/predict"), load_model=loader)
    )
    try:
        wait_until(lambda: "not a sentence" in running.call("GET", "/health")[1].get("detail", ""))
        assert running.call("GET", "/health")[0] == 503
        assert running.call("POST", "/predict", {"instances": [{"content": "x"}]})[0] == 503
    finally:
        running.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("embedpipe.serving")]
    assert errors and "gs://bucket/models/broken" in errors[0].getMessage()
    assert "OSError" in errors[0].getMessage()


def test_limits_come_from_flags_then_environment_then_defaults(monkeypatch):
    from embedpipe.cli import build_parser

    monkeypatch.setenv("EMBEDPIPE_SERVING_MAX_CHARACTERS", "1234")
    monkeypatch.setenv("EMBEDPIPE_SERVING_DEADLINE_S", "2.5")
    monkeypatch.delenv("EMBEDPIPE_SERVING_MAX_INSTANCES", raising=False)
    monkeypatch.delenv("EMBEDPIPE_SERVING_MAX_BODY_BYTES", raising=False)
    args = build_parser().parse_args(["serve", "--max-instances", "10", "--deadline-s", "7"])
    assert ServingLimits.from_arguments(args) == ServingLimits(
        max_body_bytes=ServingLimits().max_body_bytes, max_instances=10, max_characters=1234, deadline_s=7.0
    )
    assert ServingConfig.from_env("default", 8080).limits.max_characters == 1234
    assert ServingLimits() == ServingLimits(1_572_864, 250, 100_000, 30.0)  # Vertex's limits; see the module


def test_a_bad_limit_names_its_variable(monkeypatch):
    monkeypatch.setenv("EMBEDPIPE_SERVING_MAX_BODY_BYTES", "1.5MB")
    with pytest.raises(ValueError, match="EMBEDPIPE_SERVING_MAX_BODY_BYTES must be a positive number, got '1.5MB'"):
        ServingLimits.from_env()
    with pytest.raises(
        ValueError,
        match=r"max_instances \(--max-instances, \$EMBEDPIPE_SERVING_MAX_INSTANCES\) must be a positive finite",
    ):
        ServingLimits(max_instances=0)
