"""The Dockerfiles (not built here: no Docker engine) and the images named in compiled YAML."""

import re

import pytest
import yaml

import compile as compile_script
from embedpipe import __version__, images
from tests.conftest import REPO

INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "EXPOSE", "CMD", "ENTRYPOINT", "USER", "LABEL"}


def instructions(path):
    """Logical Dockerfile lines (continuations joined, comments dropped) as (INSTRUCTION, arguments)."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    assert not current, f"{path}: dangling line continuation"
    return [tuple(line.split(None, 1)) for line in logical]


def pinned(name):
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} is not pinned in constraints.txt")


@pytest.mark.parametrize("runtime", images.RUNTIMES)
def test_dockerfile_parses_pins_its_bases_and_installs_the_package(runtime):
    path = REPO / "containers" / runtime / "Dockerfile"
    parsed = instructions(path)
    assert {name for name, _ in parsed} <= INSTRUCTIONS
    build_args = dict(args.split("=", 1) for name, args in parsed if name == "ARG" and "=" in args)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], args) for name, args in parsed if name == "FROM"]
    assert bases
    for base in bases:
        image = base.split()[0]
        assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", image) and not image.endswith(":latest"), image
    if bases[-1].split()[0] == images.image_uri("base"):
        return  # built on our base image, which installs the package (checked in its own case)
    runs = " ".join(args for name, args in parsed if name == "RUN")
    assert "-c /tmp/constraints.txt" in runs and "torch==2.13.0" in runs
    assert re.search(r"pip install [^&]*/wheels/embedpipe-\*\.whl", runs)


def test_dataflow_image_uses_the_pinned_beam_version():
    bases = [args for name, args in instructions(REPO / "containers" / "dataflow" / "Dockerfile") if name == "FROM"]
    assert bases[-1] == f"apache/beam_python3.11_sdk:{pinned('apache-beam')}"


def test_image_tags_are_the_package_version():
    for runtime in images.RUNTIMES:
        assert images.image_uri(runtime).endswith(f"/embedpipe-{runtime}:{__version__}")
    with pytest.raises(ValueError, match="unknown runtime"):
        images.image_uri("gpu")


def test_compiled_yaml_names_only_this_versions_images(tmp_path):
    for path in compile_script.compile_all(tmp_path):
        spec = yaml.safe_load(path.read_text())
        executors = spec["deploymentSpec"]["executors"].values()
        named = {e["container"]["image"] for e in executors if "container" in e}
        ours = {image for image in named if "/embedpipe-" in image}
        assert ours, f"{path.name} names none of our images"
        assert all(image.endswith(":" + __version__) for image in ours), ours
