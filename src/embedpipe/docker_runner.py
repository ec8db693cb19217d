"""Running a pipeline locally with each task in the image its compiled YAML names (kfp.local's DockerRunner).

This is how `embedpipe run --runner docker` runs what Vertex AI runs: the same lightweight components, in
our images, with the wheel installed in them, not this checkout. Images are built by `make images-local`
(containers/local.sh), under the names `embedpipe.images` gives them, so nothing is pulled.

Each task's container gets:
- the host network (the embedded PostgreSQL, a local model server) and the host user's uid:gid, so it can
  reach the database's socket folder and write into the run folder as you;
- read-only bind mounts of the local input files' folders and of a local model folder, at the same paths,
  and a read-write mount of the embedded database's socket folder (the pipeline root is mounted by kfp);
- HF_HUB_OFFLINE=1, like host runs.

Everything is checked before the run starts: a daemon that answers, the images, the paths to mount.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from embedpipe.images import image_uri

#: The images a `tune_and_index` run needs (train: the local CPU stand-in made by `make images-local`).
PIPELINE_RUNTIMES = ("base", "train")

HOW_TO_BUILD = "build them with `make images-local` (containers/local.sh images)"
HOW_TO_START = (
    "start Docker, or let `containers/local.sh with-docker COMMAND` start a private daemon for one command "
    "(`make run-docker` does that for this run)"
)


class DockerUnavailable(RuntimeError):
    """No daemon answers, an image is missing, or the `docker` package is not installed; the message says how to fix it."""


@dataclass(frozen=True)
class ContainerPlan:
    """What the containers of a local run get besides the pipeline root.

    Attributes:
        mounts: host path -> read_only, mounted at the same path.
        environment: variables set in every task's container.
        user: "uid:gid" the tasks run as.
    """

    mounts: dict[str, bool] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    user: str = ""


def database_socket_folder(database_uri: str) -> str | None:
    """The Unix-socket folder a libpq URI connects through (`?host=/path` or `postgresql://%2Fpath/...`), if any."""
    if not database_uri:
        return None
    parts = urlsplit(database_uri)
    hosts = parse_qs(parts.query).get("host", [])
    candidates = hosts + ([unquote(parts.hostname or "")] if parts.hostname else [])
    for host in candidates:
        if host.startswith("/"):
            return host
    return None


def plan_containers(arguments: dict, *, database_uri: str = "") -> ContainerPlan:
    """Works out the mounts, environment and user for the tasks of a run with these pipeline arguments.

    Local paths among the arguments (input files, a model folder) are mounted read-only by their folder;
    `gs://` URIs and hub ids are left alone.
    """
    read_only: set[Path] = set()
    for value in arguments.values():
        if not isinstance(value, str) or not value or "://" in value or not Path(value).expanduser().exists():
            continue
        path = Path(value).expanduser().resolve()
        if path.is_file():
            read_only.add(path.parent)
        elif path.is_dir():
            read_only.add(path)
    mounts = {str(p): True for p in _outermost(read_only)}
    socket_folder = database_socket_folder(database_uri)
    if socket_folder:
        mounts = {p: ro for p, ro in mounts.items() if not Path(p).is_relative_to(socket_folder)}
        mounts[socket_folder] = False
    environment = {
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": "false",
        # The host uid may have no home in the image; caches (HF, torch, matplotlib) go to /tmp.
        "HOME": "/tmp",
    }
    return ContainerPlan(mounts=mounts, environment=environment, user=f"{os.getuid()}:{os.getgid()}")


def _outermost(paths: set[Path]) -> list[Path]:
    ordered = sorted(paths, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def check_docker(runtimes: tuple[str, ...] = PIPELINE_RUNTIMES):
    """Returns a docker client once a daemon answers and every image of `runtimes` is there.

    Raises:
        DockerUnavailable: with what is missing and how to get it.
    """
    try:
        import docker
    except ImportError as err:
        raise DockerUnavailable(
            "the `docker` Python package is not installed: pip install 'embedpipe[docker]'"
        ) from err
    try:
        client = docker.from_env(timeout=20)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure to reach the daemon reads the same to a person
        where = os.environ.get("DOCKER_HOST") or "the default socket /var/run/docker.sock"
        raise DockerUnavailable(
            f"no Docker daemon answers at {where} ({type(err).__name__}); {HOW_TO_START}"
        ) from None
    missing = []
    for runtime in runtimes:
        try:
            client.images.get(image_uri(runtime))
        except docker.errors.ImageNotFound:
            missing.append(image_uri(runtime))
    if missing:
        client.close()
        raise DockerUnavailable(f"image(s) not found on this Docker daemon: {', '.join(missing)}; {HOW_TO_BUILD}")
    return client


def docker_runner(plan: ContainerPlan):
    """kfp.local's DockerRunner configured with the plan (host network, mounts, environment, user)."""
    from docker.types import Mount
    from kfp import local

    mounts = [Mount(target=path, source=path, type="bind", read_only=ro) for path, ro in plan.mounts.items()]
    return local.DockerRunner(network_mode="host", mounts=mounts, environment=plan.environment, user=plan.user)
