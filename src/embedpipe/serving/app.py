"""The HTTP side of the endpoint: Vertex AI's custom-container contract, FastAPI and uvicorn.

`ServingConfig` reads the `AIP_*` variables and the request limits (`ServingLimits`, when called);
`create_app` builds the app, which loads the model in a background thread (health answers 503 until then,
with the reason if loading failed, which is also logged); `serve` runs it. Every refusal is a JSON
`{"error": ...}`: 413 for a body over the limit (checked before it is parsed), 400 for a bad body naming
the field and instance, 504 past the request's deadline; never a traceback. A gated hub model's Hugging Face token is read from the Secret Manager secret that
`EMBEDPIPE_HF_TOKEN_SECRET` names (set it in the deployed model's container environment), for the load only.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from embedpipe.serving.batcher import DeadlineExceeded
from embedpipe.serving.limits import ServingLimits
from embedpipe.serving.request import PredictError
from embedpipe.serving.service import EmbeddingService

logger = logging.getLogger(__name__)

#: The environment variable naming the Secret Manager secret version with a Hugging Face token.
HF_TOKEN_SECRET_ENV = "EMBEDPIPE_HF_TOKEN_SECRET"


@dataclass(frozen=True)
class ServingConfig:
    """Where the endpoint listens and what it serves, from Vertex's `AIP_*` variables (read when called).

    Attributes:
        model: Model reference (`AIP_STORAGE_URI`; "default" when unset).
        port: Port to listen on (`AIP_HTTP_PORT`).
        health_route: Route of the health check (`AIP_HEALTH_ROUTE`).
        predict_route: Route of predictions (`AIP_PREDICT_ROUTE`).
        hf_token_secret: Secret Manager secret version holding a Hugging Face token, for a gated hub model
            (`EMBEDPIPE_HF_TOKEN_SECRET`; "" for none). The name, never the token.
        limits: Body size, instances, characters and deadline of one request (`ServingLimits`).
    """

    model: str
    port: int
    health_route: str
    predict_route: str
    hf_token_secret: str = ""
    limits: ServingLimits = field(default_factory=ServingLimits)

    @classmethod
    def from_env(
        cls,
        model: str | None = None,
        port: int | None = None,
        hf_token_secret: str | None = None,
        limits: ServingLimits | None = None,
    ) -> "ServingConfig":
        return cls(
            model=model or os.environ.get("AIP_STORAGE_URI", "") or "default",
            port=int(port or os.environ.get("AIP_HTTP_PORT", "8080")),
            health_route=os.environ.get("AIP_HEALTH_ROUTE", "/health"),
            predict_route=os.environ.get("AIP_PREDICT_ROUTE", "/predict"),
            hf_token_secret=hf_token_secret or os.environ.get(HF_TOKEN_SECRET_ENV, ""),
            limits=limits or ServingLimits.from_env(),
        )


def create_app(config: ServingConfig, *, gcs_client=None, load_model=None):
    """Builds the FastAPI app; the model loads in a background thread when the app starts.

    Args:
        config: Port, routes, model reference and the secret of a gated model's token.
        gcs_client: Storage client (or fake) for a `gs://` model.
        load_model: Replaces `embedpipe.models.load_model` (tests use it to hold loading back).

    Returns:
        The FastAPI app: GET `config.health_route` (200 once the model is loaded, else 503 with the reason)
        and POST `config.predict_route` (200; 400 for a bad request, 413 for one too large, 503 while
        loading, 504 past the deadline).
    """
    from contextlib import asynccontextmanager

    from embedpipe.extras import optional_imports

    with optional_imports("serve", "the prediction server"):
        from fastapi import FastAPI, Request
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import JSONResponse

    state: dict = {"service": None, "error": None}
    limits = config.limits

    def load() -> None:
        from embedpipe import models

        loader = load_model or models.load_model
        logger.info("loading model %s", config.model)
        try:
            with models.use_hf_token(config.hf_token_secret):
                state["service"] = EmbeddingService(loader(config.model, gcs_client=gcs_client), limits=limits)
        except Exception as err:  # health keeps answering 503 with the reason
            state["error"] = f"{type(err).__name__}: {err}"
            logger.error("could not load model %s: %s; health answers 503", config.model, state["error"])
        else:
            logger.info("model %s loaded; serving %s", config.model, config.predict_route)

    def refuse(status: int, message: str):
        # a message may quote the request (a lone surrogate included): never let it break the response
        text = message.encode("utf-8", "backslashreplace").decode("utf-8")
        return JSONResponse({"error": text}, status_code=status)

    async def read_body(request: Request) -> bytes | None:
        """The body, or None once it is over the limit (the rest is not read into memory)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def answer(service: EmbeddingService, raw: bytes, deadline: float):
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as err:
            return refuse(400, f"malformed JSON: {err}")
        except UnicodeDecodeError as err:
            return refuse(400, f"malformed JSON: the body is not UTF-8 text (byte {err.start}: {err.reason})")
        except RecursionError:
            return refuse(400, "malformed JSON: nested too deeply")
        except ValueError as err:  # a number of more than 4300 digits
            return refuse(400, f"malformed JSON: {str(err).split(';')[0]}")
        try:
            return service.predict(body, deadline)
        except PredictError as err:
            return refuse(400, str(err))
        except DeadlineExceeded as err:
            return refuse(504, f"{err} (deadline {limits.deadline_s:g} s)")
        except Exception:  # a bug, not the client's fault: logged, answered without a traceback
            logger.exception("predict failed")
            return refuse(500, "internal error while answering the request; it has been logged")

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
        deadline = time.monotonic() + limits.deadline_s
        service = state["service"]
        if service is None:
            return refuse(503, state["error"] or "model is loading; retry shortly")
        raw = await read_body(request)
        if raw is None:
            return refuse(
                413, f"the request body is larger than {limits.max_body_bytes} bytes; send fewer or shorter instances"
            )
        return await run_in_threadpool(answer, service, raw, deadline)

    return app


def serve(
    model: str | None = None,
    *,
    host: str = "0.0.0.0",
    port: int | None = None,
    hf_token_secret: str | None = None,
    limits: ServingLimits | None = None,
) -> None:
    """Runs the endpoint with uvicorn until interrupted.

    Args:
        model: Model reference (default: `AIP_STORAGE_URI`, else the packaged MiniLM).
        host: Address to listen on.
        port: Port (default: `AIP_HTTP_PORT`, else 8080).
        hf_token_secret: Secret Manager secret version with a Hugging Face token for a gated model
            (default: `EMBEDPIPE_HF_TOKEN_SECRET`).
        limits: Request limits (default: `ServingLimits.from_env()`).
    """
    from embedpipe.extras import require

    require("fastapi", "serve", "embedpipe serve")  # before any model loads: the app needs it too
    uvicorn = require("uvicorn", "serve", "embedpipe serve")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServingConfig.from_env(model, port, hf_token_secret, limits)
    uvicorn.run(create_app(config), host=host, port=config.port, log_level="info")
