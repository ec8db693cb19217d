"""An embedding endpoint that answers like Vertex AI's `textembedding-gecko`, for any sentence-transformers model.

It follows Vertex AI's custom-container contract: the port comes from `AIP_HTTP_PORT`, the routes from
`AIP_HEALTH_ROUTE` and `AIP_PREDICT_ROUTE`, the model from `AIP_STORAGE_URI` (a `gs://` folder copied
locally at start, or a local path). Existing clients of textembedding-gecko call it unchanged:

    POST /predict
    {"instances": [{"content": "what is pgvector?", "task_type": "RETRIEVAL_QUERY"}],
     "parameters": {"autoTruncate": true, "outputDimensionality": 256}}
    ->
    {"predictions": [{"embeddings": {"values": [...],
                                     "statistics": {"token_count": 7, "truncated": false}}}]}

Bad requests get a 400 with a message saying what is wrong; health answers 503 until the model is loaded.

Example (local):
    $ embedpipe serve --model default --port 8080
    $ curl -s localhost:8080/predict -d '{"instances":[{"content":"hello"}]}'
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import json
import os
import queue
import threading
from dataclasses import dataclass, field

from embedpipe.prompts import TASK_TYPES, Prompts, resolve_prompts

#: Most instances one request may carry (textembedding-gecko's limit).
MAX_INSTANCES = 250
DEFAULT_TASK_TYPE = "RETRIEVAL_QUERY"


class PredictError(ValueError):
    """A request the endpoint refuses (answered with HTTP 400)."""


class MicroBatcher:
    """Encodes the texts of concurrent requests together, in one background thread.

    Requests that arrive while a batch is being encoded wait and are encoded as the next batch (up to
    `max_texts` texts), so under load the model sees batches instead of one text at a time, and torch
    never runs two encodes at once on the same cores. Token counting runs here too: a Hugging Face fast
    tokenizer must not be called from two threads at once ("Already borrowed").

    `encode_fn(texts)` returns (vectors, token_counts); `encode(texts)` returns the same for one request.
    """

    def __init__(self, encode_fn, max_texts: int = 64):
        self.encode_fn = encode_fn
        self.max_texts = max_texts
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="embedpipe-batcher", daemon=True).start()

    def encode(self, texts: list[str]):
        slot: dict = {"done": threading.Event()}
        self.pending.put((texts, slot))
        slot["done"].wait()
        if "error" in slot:
            raise slot["error"]
        return slot["result"]

    def _run(self) -> None:
        while True:
            batch = [self.pending.get()]
            count = len(batch[0][0])
            while count < self.max_texts:
                try:
                    item = self.pending.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                count += len(item[0])
            try:
                vectors, counts = self.encode_fn([text for texts, _ in batch for text in texts])
            except Exception as err:  # every waiting request gets the error
                for _, slot in batch:
                    slot["error"] = err
                    slot["done"].set()
                continue
            start = 0
            for texts, slot in batch:
                slot["result"] = (vectors[start : start + len(texts)], counts[start : start + len(texts)])
                start += len(texts)
                slot["done"].set()


@dataclass
class EmbeddingService:
    """Turns gecko-style request bodies into gecko-style responses with one loaded model.

    Example:
        >>> from embedpipe.models import load_model                          # doctest: +SKIP
        >>> service = EmbeddingService(load_model("default"))                # doctest: +SKIP
        >>> service.predict({"instances": [{"content": "hi"}]})["predictions"][0]["embeddings"]["statistics"]  # doctest: +SKIP
        {'token_count': 3, 'truncated': False}
    """

    model: object
    batch_size: int = 32
    _prompts: dict[str, Prompts] = field(default_factory=dict)
    _batcher: MicroBatcher | None = None

    def __post_init__(self):
        from embedpipe.models import encode

        self._batcher = MicroBatcher(
            lambda texts: (encode(self.model, texts, batch_size=self.batch_size), self.token_counts(texts))
        )

    @property
    def dimension(self) -> int:
        from embedpipe.models import embedding_dimension

        return embedding_dimension(self.model)

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def prompts(self, task_type: str) -> Prompts:
        if task_type not in self._prompts:
            self._prompts[task_type] = resolve_prompts(task_type, self.model.prompts)
        return self._prompts[task_type]

    def _parse(self, body) -> tuple[list[str], bool, int | None]:
        if not isinstance(body, dict):
            raise PredictError('the request body must be a JSON object like {"instances": [{"content": "..."}]}')
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise PredictError("'instances' must be a non-empty list of objects with a 'content' string")
        if len(instances) > MAX_INSTANCES:
            raise PredictError(f"too many instances: {len(instances)}; at most {MAX_INSTANCES} per request")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise PredictError("'parameters' must be a JSON object")
        auto_truncate = parameters.get("autoTruncate", True)
        if not isinstance(auto_truncate, bool):
            raise PredictError("parameters.autoTruncate must be true or false")
        dimension = parameters.get("outputDimensionality")
        if dimension is not None:
            if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= self.dimension:
                raise PredictError(
                    f"parameters.outputDimensionality must be an integer from 1 to {self.dimension} (the model's dimension), got {dimension!r}"
                )
        texts = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise PredictError(f"instances[{i}] must be an object with a 'content' string")
            content = instance.get("content")
            if not isinstance(content, str) or not content.strip():
                raise PredictError(f"instances[{i}].content must be a non-empty string")
            task_type = instance.get("task_type", DEFAULT_TASK_TYPE)
            if not isinstance(task_type, str) or task_type.upper() not in TASK_TYPES:
                raise PredictError(
                    f"instances[{i}].task_type {task_type!r} is unknown; expected one of {', '.join(TASK_TYPES)}"
                )
            task_type = task_type.upper()
            title = instance.get("title")
            if title is not None and (not isinstance(title, str) or task_type != "RETRIEVAL_DOCUMENT"):
                raise PredictError(
                    f"instances[{i}].title must be a string and is only valid with task_type RETRIEVAL_DOCUMENT"
                )
            prompts = self.prompts(task_type)
            if task_type == "RETRIEVAL_DOCUMENT":
                texts.append(prompts.format_documents([content], [title or ""])[0])
            else:
                texts.append(prompts.format_queries([content])[0])
        return texts, auto_truncate, dimension

    def token_counts(self, texts: list[str]) -> list[int]:
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def predict(self, body) -> dict:
        """Answers one request body.

        Raises:
            PredictError: for a request that must be answered 400.
        """
        import numpy as np

        texts, auto_truncate, dimension = self._parse(body)
        vectors, counts = self._batcher.encode(texts)
        limit = self.max_seq_length
        if not auto_truncate:
            too_long = [i for i, n in enumerate(counts) if n > limit]
            if too_long:
                raise PredictError(
                    f"instances{too_long[:10]} are longer than the model's {limit} tokens "
                    f"({', '.join(str(counts[i]) for i in too_long[:10])} tokens) and autoTruncate is false"
                )
        if dimension is not None and dimension < vectors.shape[1]:
            vectors = vectors[:, :dimension]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return {
            "predictions": [
                {"embeddings": {"values": vector.tolist(), "statistics": {"token_count": n, "truncated": n > limit}}}
                for vector, n in zip(vectors, counts)
            ]
        }


@dataclass(frozen=True)
class ServingConfig:
    """Where the endpoint listens and what it serves, from Vertex's `AIP_*` variables (read when called)."""

    model: str
    port: int
    health_route: str
    predict_route: str

    @classmethod
    def from_env(cls, model: str | None = None, port: int | None = None) -> "ServingConfig":
        return cls(
            model=model or os.environ.get("AIP_STORAGE_URI", "") or "default",
            port=int(port or os.environ.get("AIP_HTTP_PORT", "8080")),
            health_route=os.environ.get("AIP_HEALTH_ROUTE", "/health"),
            predict_route=os.environ.get("AIP_PREDICT_ROUTE", "/predict"),
        )


def create_app(config: ServingConfig, *, gcs_client=None, load_model=None):
    """Builds the FastAPI app; the model loads in a background thread when the app starts.

    Args:
        config: Port, routes and model reference.
        gcs_client: Storage client (or fake) for a `gs://` model.
        load_model: Replaces `embedpipe.models.load_model` (tests use it to hold loading back).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    state: dict = {"service": None, "error": None}

    def load() -> None:
        from embedpipe import models

        loader = load_model or models.load_model
        try:
            state["service"] = EmbeddingService(loader(config.model, gcs_client=gcs_client))
        except Exception as err:  # health keeps answering 503 with the reason
            state["error"] = f"{type(err).__name__}: {err}"

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=load, name="embedpipe-model-loader", daemon=True).start()
        yield

    app = FastAPI(title="embedpipe embeddings", lifespan=lifespan)

    @app.get(config.health_route)
    async def health():
        if state["service"] is None:
            detail = state["error"] or "model is loading"
            return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
        return {"status": "ok", "model": config.model, "dimension": state["service"].dimension}

    @app.post(config.predict_route)
    async def predict(request: Request):
        service = state["service"]
        if service is None:
            return JSONResponse({"error": state["error"] or "model is loading; retry shortly"}, status_code=503)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"malformed JSON: {err}"}, status_code=400)
        try:
            return await run_in_threadpool(service.predict, body)
        except PredictError as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    return app


def serve(model: str | None = None, *, host: str = "0.0.0.0", port: int | None = None) -> None:
    """Runs the endpoint with uvicorn until interrupted."""
    import uvicorn

    config = ServingConfig.from_env(model, port)
    uvicorn.run(create_app(config), host=host, port=config.port, log_level="info")
