"""The HTTP side of the endpoint: Vertex AI's custom-container contract, FastAPI and uvicorn.

`ServingConfig` reads the `AIP_*` variables (when called); `create_app` builds the app, which loads the
model in a background thread (health answers 503 until then, with the reason if loading failed);
`serve` runs it. A gated hub model's Hugging Face token is read from the Secret Manager secret that
`EMBEDPIPE_HF_TOKEN_SECRET` names (set it in the deployed model's container environment), for the load only.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import json
import os
import threading
from dataclasses import dataclass

from embedpipe.serving.request import PredictError
from embedpipe.serving.service import EmbeddingService

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
    """

    model: str
    port: int
    health_route: str
    predict_route: str
    hf_token_secret: str = ""

    @classmethod
    def from_env(
        cls, model: str | None = None, port: int | None = None, hf_token_secret: str | None = None
    ) -> "ServingConfig":
        return cls(
            model=model or os.environ.get("AIP_STORAGE_URI", "") or "default",
            port=int(port or os.environ.get("AIP_HTTP_PORT", "8080")),
            health_route=os.environ.get("AIP_HEALTH_ROUTE", "/health"),
            predict_route=os.environ.get("AIP_PREDICT_ROUTE", "/predict"),
            hf_token_secret=hf_token_secret or os.environ.get(HF_TOKEN_SECRET_ENV, ""),
        )


def create_app(config: ServingConfig, *, gcs_client=None, load_model=None):
    """Builds the FastAPI app; the model loads in a background thread when the app starts.

    Args:
        config: Port, routes, model reference and the secret of a gated model's token.
        gcs_client: Storage client (or fake) for a `gs://` model.
        load_model: Replaces `embedpipe.models.load_model` (tests use it to hold loading back).

    Returns:
        The FastAPI app: GET `config.health_route` (200 once the model is loaded, else 503 with the reason)
        and POST `config.predict_route` (200, 400 for a bad request, 503 while loading).
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
            with models.use_hf_token(config.hf_token_secret):
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
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
            return JSONResponse({"error": f"malformed JSON: {err}"}, status_code=400)
        try:
            return await run_in_threadpool(service.predict, body)
        except PredictError as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    return app


def serve(
    model: str | None = None, *, host: str = "0.0.0.0", port: int | None = None, hf_token_secret: str | None = None
) -> None:
    """Runs the endpoint with uvicorn until interrupted.

    Args:
        model: Model reference (default: `AIP_STORAGE_URI`, else the packaged MiniLM).
        host: Address to listen on.
        port: Port (default: `AIP_HTTP_PORT`, else 8080).
        hf_token_secret: Secret Manager secret version with a Hugging Face token for a gated model
            (default: `EMBEDPIPE_HF_TOKEN_SECRET`).
    """
    import uvicorn

    config = ServingConfig.from_env(model, port, hf_token_secret)
    uvicorn.run(create_app(config), host=host, port=config.port, log_level="info")
