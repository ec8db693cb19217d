"""Describing a tuned model for Vertex AI Model Registry: our serving image + the model folder.

google-cloud-pipeline-components' `ModelUploadOp` registers a `google.UnmanagedContainerModel`
artifact: its URI is the model folder (Vertex copies it and passes it as `AIP_STORAGE_URI`), its
metadata the container spec. The serving container is `embedpipe serve` (see embedpipe.serving).
"""

from __future__ import annotations

HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"
PORT = 8080


def serving_container_spec(image: str) -> dict:
    """The `containerSpec` of a Vertex model served by our serving image.

    Example:
        >>> serving_container_spec("us-docker.pkg.dev/p/r/embedpipe-serve:0.1.0")["ports"]
        [{'containerPort': 8080}]
    """
    return {
        "imageUri": image,
        "healthRoute": HEALTH_ROUTE,
        "predictRoute": PREDICT_ROUTE,
        "ports": [{"containerPort": PORT}],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
    }
