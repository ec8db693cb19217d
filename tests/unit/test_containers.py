"""The Dockerfiles as text (tests/containers builds and runs them) and the images named in compiled YAML."""

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


def stages(path):
    """[(base image with build-arg defaults filled in, [(INSTRUCTION, args), ...]), ...] per FROM."""
    parsed = instructions(path)
    build_args = dict(args.split("=", 1) for name, args in parsed if name == "ARG" and "=" in args)
    result = []
    for name, args in parsed:
        if name == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], args).split()[0]
            result.append((image, []))
        elif result:
            result[-1][1].append((name, args))
    return result


@pytest.mark.parametrize("runtime", images.RUNTIMES)
def test_dockerfile_parses_pins_its_bases_and_installs_the_package(runtime):
    path = REPO / "containers" / runtime / "Dockerfile"
    assert {name for name, _ in instructions(path)} <= INSTRUCTIONS
    built = stages(path)
    assert built
    for image, _ in built:
        assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", image) and not image.endswith(":latest"), image
    if built[-1][0] == images.image_uri("base"):
        return  # built on our base image, which installs the package (checked in its own case)
    runs = " ".join(args for _, body in built for name, args in body if name == "RUN")
    assert "sh /tmp/embedpipe/install.sh" in runs
    # The final stage carries the installed environment, not the wheelhouse.
    final = built[-1][1]
    assert ("COPY", "--from=install /opt/embedpipe /opt/embedpipe") in final
    assert not any(name == "COPY" and "wheelhouse" in args for name, args in final)


def test_every_image_installs_the_same_way_offline_with_the_pins():
    script = (REPO / "containers" / "install.sh").read_text()
    assert script.count("--no-index") == 2 and "$pip check" in script
    assert "import embedpipe.cli, embedpipe.vectorstore" in script
    # The wheelhouses are the pinned closure: constraints.txt and torch 2.13.0.
    local = (REPO / "containers" / "local.sh").read_text()
    assert local.count("-c constraints.txt") == 2 and local.count("torch==2.13.0") == 2


@pytest.mark.parametrize("runtime", ["base", "train", "dataflow"])
def test_dependencies_are_a_layer_of_their_own_before_the_wheel(runtime):
    """A new commit changes only the wheel: the multi-GB dependency layer stays cached."""
    first = stages(REPO / "containers" / runtime / "Dockerfile")[0][1]
    steps = [args for name, args in first if name in ("RUN", "COPY")]
    dependencies = next(i for i, a in enumerate(steps) if "install.sh dependencies" in a)
    wheel = next(i for i, a in enumerate(steps) if a.startswith("build/wheels"))
    assert dependencies < wheel


@pytest.mark.parametrize("runtime", ["base", "train"])
def test_images_run_as_a_non_root_user(runtime):
    final = stages(REPO / "containers" / runtime / "Dockerfile")[-1][1]
    users = [args for name, args in final if name == "USER"]
    assert users and users[-1] not in ("root", "0"), users


def test_train_image_is_not_built_on_a_cuda_base_that_torch_does_not_use():
    for image, _ in stages(REPO / "containers" / "train" / "Dockerfile"):
        assert not image.startswith("nvidia/cuda"), image


def test_dataflow_image_uses_the_pinned_beam_version():
    assert (
        stages(REPO / "containers" / "dataflow" / "Dockerfile")[-1][0]
        == f"apache/beam_python3.11_sdk:{pinned('apache-beam')}"
    )


def test_the_build_context_carries_only_what_the_dockerfiles_copy():
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is excluded first (.venv, .git, .embedpipe, build outputs)"
    allowed = {line[1:] for line in lines[1:]}
    assert all(line.startswith("!") for line in lines[1:])
    for runtime in images.RUNTIMES:
        for name, args in instructions(REPO / "containers" / runtime / "Dockerfile"):
            if name == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    source = re.sub(r"\$\{WHEELHOUSE\}", "build/wheelhouse-cuda", source)
                    assert source in allowed, f"{runtime}: COPY {source} is excluded by .dockerignore"


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
