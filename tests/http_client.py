"""A few lines of HTTP for tests that talk to a server in another process or container (loopback only)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

VERTEX_EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "vertex-examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    """GET (no body) or POST JSON; returns (status, parsed JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_until_healthy(url: str, *, seconds: float = 120, alive=lambda: True) -> None:
    """Polls `url` until it answers 200; fails when `alive()` turns false or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert alive(), f"the server behind {url} exited before it was healthy"
        try:
            if call(url, timeout=5)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not become healthy within {seconds} s")


def vertex_predict_request() -> dict:
    """The predict body an existing Vertex AI user sends (../shared/vertex-examples), or the same shape."""
    path = VERTEX_EXAMPLES / "predict.request.json"
    return json.loads(path.read_text()) if path.exists() else {"instances": [{"content": "Hello World!"}]}


def assert_gecko_shaped(answer: dict, instances: int, dimensions: int) -> None:
    """`predictions[].embeddings.{values, statistics.{token_count, truncated}}`, as textembedding-gecko answers."""
    predictions = answer["predictions"]
    assert len(predictions) == instances
    for prediction in predictions:
        embeddings = prediction["embeddings"]
        assert len(embeddings["values"]) == dimensions
        assert all(isinstance(v, float) for v in embeddings["values"])
        assert embeddings["statistics"]["token_count"] > 0
        assert embeddings["statistics"]["truncated"] is False
