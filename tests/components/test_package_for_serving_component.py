from google_cloud_pipeline_components.types.artifact_types import UnmanagedContainerModel
from kfp import dsl

from embedpipe.components import package_for_serving
from embedpipe.images import SERVE_IMAGE


def test_serving_model_points_at_the_model_folder_and_our_serving_image(tmp_path):
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    serving = UnmanagedContainerModel(name="serving_model", uri=str(tmp_path / "serving_model"))
    package_for_serving.python_func(model=model, serving_model=serving)
    assert serving.uri == model.uri
    spec = serving.metadata["containerSpec"]
    assert spec["imageUri"] == SERVE_IMAGE
    assert (spec["healthRoute"], spec["predictRoute"], spec["ports"]) == (
        "/health",
        "/predict",
        [{"containerPort": 8080}],
    )
