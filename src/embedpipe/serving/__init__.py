"""An embedding endpoint that answers like Vertex AI's `textembedding-gecko`, for any sentence-transformers model.

It follows Vertex AI's custom-container contract: the port comes from `AIP_HTTP_PORT`, the routes from
`AIP_HEALTH_ROUTE` and `AIP_PREDICT_ROUTE`, the model from `AIP_STORAGE_URI` (a `gs://` folder copied
locally at start, or a local path). Existing clients of textembedding-gecko call it unchanged:

    POST /predict
    {"instances": [{"content": "what is pgvector?", "task_type": "RETRIEVAL_QUERY"},
                   {"content": "pgvector adds vector search to Postgres.", "task_type": "RETRIEVAL_DOCUMENT",
                    "title": "pgvector"}],
     "parameters": {"autoTruncate": true, "outputDimensionality": 256}}
    ->
    {"predictions": [{"embeddings": {"values": [...],
                                     "statistics": {"token_count": 7, "truncated": false}}}, ...],
     "metadata": {"billableCharacterCount": 50}}

An instance is `content`, an optional `task_type` (any task type `embedpipe.prompts` knows, `DEFAULT`
included; missing, null or "" is RETRIEVAL_QUERY, as Vertex documents) and an optional `title` (only with
RETRIEVAL_DOCUMENT; null or "" is no title, as Vertex clients send it). `parameters.autoTruncate`
(default true) false refuses a text longer than the model's maximum tokens; `outputDimensionality` keeps
that many leading dimensions, re-normalised. `billableCharacterCount` counts the characters of the
instances' `content` as Vertex bills them: Unicode code points, white space excluded.

Bad requests get a 400 whose message names the instance and the field (413 for a body over
`ServingLimits.max_body_bytes`, 504 past the request's deadline; never a 500 or a traceback); one text the
model cannot encode fails its own request only. Health answers 503 until the model is loaded. A gated hub model's token is read from Secret Manager at start (`EMBEDPIPE_HF_TOKEN_SECRET`).

Modules:
    request: `parse_request` (a body checked and formatted into a `PredictRequest`), `PredictError`,
        `billable_characters`.
    limits: `ServingLimits` (body bytes, instances, characters, deadline; env variables and flags).
    batcher: `MicroBatcher` (concurrent requests encoded together, each failing alone), `DeadlineExceeded`.
    service: `EmbeddingService` (one loaded model answering bodies).
    app: `ServingConfig` (the `AIP_*` variables), `create_app` (FastAPI), `serve` (uvicorn).

Example (local):
    $ embedpipe serve --model default --port 8080
    $ curl -s localhost:8080/predict -d '{"instances":[{"content":"hello"}]}'
"""

from embedpipe.serving.app import ServingConfig, create_app, serve
from embedpipe.serving.batcher import DeadlineExceeded, ItemFailed, MicroBatcher
from embedpipe.serving.limits import ServingLimits
from embedpipe.serving.request import (
    DEFAULT_TASK_TYPE,
    MAX_INSTANCES,
    PredictError,
    PredictRequest,
    billable_characters,
    parse_request,
)
from embedpipe.serving.service import EmbeddingService

__all__ = [
    "DEFAULT_TASK_TYPE",
    "MAX_INSTANCES",
    "DeadlineExceeded",
    "EmbeddingService",
    "ItemFailed",
    "MicroBatcher",
    "PredictError",
    "PredictRequest",
    "ServingConfig",
    "ServingLimits",
    "billable_characters",
    "create_app",
    "parse_request",
    "serve",
]
