"""The one place that decides container image names and tags.

Every image is tagged with the package version, so a compiled pipeline names exactly the code it runs.
Build and push them with `make images` (see containers/).
"""

from embedpipe import __version__

#: Artifact Registry repository the images are pushed to. Change it here to use your own project's
#: registry; every component and the Dataflow worker options read it from this module.
REGISTRY = "us-docker.pkg.dev/embedpipe/embedpipe"

#: Runtimes, one Dockerfile each under containers/<runtime>/.
RUNTIMES = ("base", "train", "dataflow", "serve")


def image_uri(runtime: str = "base", registry: str = REGISTRY, tag: str = __version__) -> str:
    """Returns the image URI for one runtime, e.g. `.../embedpipe-base:0.1.0`.

    Args:
        runtime: One of RUNTIMES.
        registry: The image registry path.
        tag: The image tag; the package version unless you know better.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    return f"{registry}/embedpipe-{runtime}:{tag}"


BASE_IMAGE = image_uri("base")
TRAIN_IMAGE = image_uri("train")
DATAFLOW_IMAGE = image_uri("dataflow")
SERVE_IMAGE = image_uri("serve")


if __name__ == "__main__":  # `python -m embedpipe.images base` prints that runtime's image URI
    import sys

    print(image_uri(*sys.argv[1:2]))
