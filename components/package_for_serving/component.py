"""package_for_serving: describe a tuned model as a Vertex serving container, for Model Registry."""

# GCPC's artifact type is what its ModelUploadOp takes (a light import: no Google Cloud client is loaded).
from google_cloud_pipeline_components.types.artifact_types import UnmanagedContainerModel
from kfp import dsl
from kfp.dsl import Input, Model, Output

from embedpipe.images import BASE_IMAGE, SERVE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def package_for_serving(
    model: Input[Model],
    serving_model: Output[UnmanagedContainerModel],
    serving_image: str = SERVE_IMAGE,
):
    """Points an UnmanagedContainerModel at the tuned model folder and our serving image.

    Feed `serving_model` to google-cloud-pipeline-components' `ModelUploadOp` to register the model;
    Vertex then serves it with `embedpipe serve` (textembedding-gecko request/response shape).

    Args:
        model: The tuned sentence-transformers model folder (fine_tune's output).
        serving_image: Serving container image (default: this package version's serving image).

    Returns:
        serving_model: URI = the model folder; metadata.containerSpec = image, routes and port.
    """
    from embedpipe.registry import serving_container_spec

    serving_model.uri = model.uri
    serving_model.metadata["containerSpec"] = serving_container_spec(serving_image)
