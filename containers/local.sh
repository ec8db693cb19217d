#!/usr/bin/env bash
# Builds and runs embedpipe's images on this machine, from the same Dockerfiles the cloud build uses.
#
#   containers/local.sh images            build base, dataflow and serve (and tag base as the local train
#                                         stand-in); starts a Docker daemon if none answers, stops it after
#   containers/local.sh with-docker CMD…  run CMD with a Docker daemon (DOCKER_HOST exported), started for
#                                         it if none answers and stopped by its PID afterwards
#   containers/local.sh test              build the images, then run tests/containers against them; when
#                                         Docker cannot be had, says why and skips (fails instead with
#                                         EMBEDPIPE_REQUIRE_CONTAINERS=1, as CI sets it)
#   containers/local.sh wheelhouse        only make build/wheelhouse (every pinned dependency, CPU torch)
#   containers/local.sh wheelhouse-cuda   only make build/wheelhouse-cuda (PyPI's CUDA torch, for `make images`)
#
# Settings (environment): PYTHON (a Python with embedpipe installed; default .venv/bin/python),
# EMBEDPIPE_CACHE (default ~/.cache/embedpipe: wheelhouses, the local Python base, the daemon's data),
# PYTHON_BASE (default python:3.11.7-slim-bookworm; when it cannot be pulled, a Debian bookworm base is
# made with debootstrap). Exit status 3 = a tool is missing (the message says how to get it).
# What is built and what is not: containers/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
CACHE=${EMBEDPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/embedpipe}
PUBLIC_BASE=${PYTHON_BASE:-python:3.11.7-slim-bookworm}
LOCAL_BASE=embedpipe-local/python:3.11-bookworm
DAEMON_DIR=$CACHE/docker
REPORT=build/images-local.json

say() { printf 'containers/local.sh: %s\n' "$*" >&2; }
SKIP_WHEN_MISSING=""
missing() {
    if [ -n "$SKIP_WHEN_MISSING" ] && [ -z "${EMBEDPIPE_REQUIRE_CONTAINERS:-}" ]; then
        say "SKIPPED the container tier: $1"
        exit 0
    fi
    say "$1"
    exit 3
}

docker_answers() { timeout 20 docker info >/dev/null 2>&1; }

# Starts a private dockerd (no iptables, no bridge: containers use --network host or none) when no
# daemon answers at DOCKER_HOST or the default socket; its PID is kept so that it alone is stopped.
STARTED_DOCKERD=""
docker_up() {
    command -v docker >/dev/null || missing "no 'docker' command: install Docker (Debian/Ubuntu: apt-get install docker.io)"
    if docker_answers; then return; fi
    export DOCKER_HOST=unix://$DAEMON_DIR/docker.sock
    if docker_answers; then return; fi
    command -v dockerd >/dev/null || missing "no Docker daemon answers and there is no 'dockerd' to start one: install Docker (Debian/Ubuntu: apt-get install docker.io) or start yours and set DOCKER_HOST"
    [ "$(id -u)" = 0 ] || missing "no Docker daemon answers, and starting one needs root: start Docker (e.g. 'sudo systemctl start docker') or run this as root"
    mkdir -p "$DAEMON_DIR"
    say "starting dockerd (data in $DAEMON_DIR, log $DAEMON_DIR/dockerd.log)"
    dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$DAEMON_DIR/root" \
        --exec-root "$DAEMON_DIR/exec" -H "$DOCKER_HOST" --pidfile "$DAEMON_DIR/dockerd.pid" \
        >"$DAEMON_DIR/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    trap docker_down EXIT
    for _ in $(seq 60); do docker_answers && return; sleep 1; done
    missing "dockerd did not answer within 60 s; its log: $DAEMON_DIR/dockerd.log"
}

docker_down() {
    if [ -n "$STARTED_DOCKERD" ] && kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
        say "stopping the dockerd this script started (PID $STARTED_DOCKERD)"
        kill "$STARTED_DOCKERD"
        for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    STARTED_DOCKERD=""
}

# The Python base of the images: the public one when it can be pulled, else one made from Debian's
# packages (bookworm's Python 3.11) with debootstrap, imported once and kept by the daemon.
python_base() {
    if docker image inspect "$PUBLIC_BASE" >/dev/null 2>&1 || timeout 60 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
        echo "$PUBLIC_BASE"; return
    fi
    if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || missing "cannot pull $PUBLIC_BASE and no 'debootstrap' to make a local base: install it (apt-get install debootstrap) or set PYTHON_BASE to an image you have"
        [ "$(id -u)" = 0 ] || missing "cannot pull $PUBLIC_BASE; making a local base with debootstrap needs root"
        say "cannot pull $PUBLIC_BASE: making $LOCAL_BASE with debootstrap (Debian bookworm, python3; a few minutes, once)"
        local rootfs=$CACHE/rootfs.tmp
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >"$CACHE/debootstrap.log" 2>&1 \
            || missing "debootstrap failed; its log: $CACHE/debootstrap.log"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
        rm -rf "$rootfs"
    fi
    echo "$LOCAL_BASE"
}

# The wheelhouses' cache key: constraints.txt and the package's dependency lists, the extras' included (not
# the rest of pyproject).
dependency_key() {
    { cat constraints.txt; "$PY" -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(p["dependencies"], p["optional-dependencies"])'; } | cksum | cut -d' ' -f1
}

# A few dependencies are published as source only (kfp-server-api, google-apitools): built into wheels here,
# once, so that the images install wheels only, offline, without a compiler.
sdists_to_wheels() {
    local folder=$1 sdist
    for sdist in "$folder"/*.tar.gz "$folder"/*.zip; do
        [ -e "$sdist" ] || continue
        "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$folder" "$sdist" >>"$CACHE/wheelhouse.log" 2>&1 \
            || { say "building a wheel of $(basename "$sdist") failed; log: $CACHE/wheelhouse.log"; exit 1; }
        rm -f "$sdist"
    done
}

# A wheelhouse downloaded once per constraints.txt + dependency list into the cache, then hard-linked
# into build/NAME, so image builds are offline and repeatable: cached_wheelhouse NAME WHAT FILL, where
# FILL downloads into the folder it is given.
cached_wheelhouse() {
    local name=$1 what=$2 fill=$3 cached
    cached=$CACHE/$name/$(dependency_key)
    if [ ! -d "$cached" ]; then
        say "downloading $what into $cached, once"
        rm -rf "$cached.tmp" && mkdir -p "$cached.tmp"
        "$fill" "$cached.tmp" >"$CACHE/$name.log" 2>&1 || { say "pip download failed; log: $CACHE/$name.log"; exit 1; }
        rm -f "$cached.tmp"/embedpipe-*.whl
        sdists_to_wheels "$cached.tmp"
        mv "$cached.tmp" "$cached"
    fi
    rm -rf "build/$name"
    cp -al "$cached" "build/$name" 2>/dev/null || cp -a "$cached" "build/$name"
}

# Every pinned dependency of the wheel with every extra ([all]: the images run every command); this machine's
# pip settings pick the CPU torch.
download_cpu() {
    local wheel
    wheel=$(echo build/wheels/embedpipe-*.whl)
    "$PY" -m pip download --quiet -c constraints.txt --dest "$1" torch==2.13.0 "$wheel[all]"
}

# The CPU wheelhouse without its torch, plus PyPI's torch (the CUDA 13 build) and its own dependencies
# (nvidia-* wheels, triton), for Linux x86_64 and Python 3.11, ignoring local pip settings (a CPU
# find-links). Only torch is fetched by platform: pip allows that for wheels only, and two of the other
# dependencies are published as source.
download_cuda() {
    cp -al build/wheelhouse/. "$1" 2>/dev/null || cp -a build/wheelhouse/. "$1"
    rm -f "$1"/torch-*.whl
    local platforms=() glibc
    for glibc in $(seq 17 28); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done  # torch needs glibc 2.28
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "$PY" -m pip download --quiet --only-binary=:all: "${platforms[@]}" \
        --platform manylinux2014_x86_64 --python-version 3.11 -c constraints.txt --dest "$1" torch==2.13.0
}

# build/wheels: this checkout's wheel; build/wheelhouse: every pinned dependency as a wheel (CPU torch).
wheels() {
    rm -rf build/wheels
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir build/wheels . >build/wheel.log 2>&1 \
        || { say "building the embedpipe wheel failed; log: build/wheel.log"; exit 1; }
    cached_wheelhouse wheelhouse "the wheelhouse (every pinned dependency, CPU torch)" download_cpu
    ls build/wheelhouse/torch-*+cpu*.whl >/dev/null 2>&1 \
        || say "warning: the wheelhouse's torch is not a CPU build: $(ls build/wheelhouse/torch-*.whl)"
}

# build/wheelhouse-cuda: the same pins with PyPI's CUDA torch, for the train and Dataflow images of `make images`.
wheels_cuda() {
    [ -d build/wheelhouse ] || wheels
    cached_wheelhouse wheelhouse-cuda "the CUDA wheelhouse (PyPI's torch, several GB)" download_cuda
}

image_uri() { "$PY" -m embedpipe.images "$1"; }

# docker build RUNTIME [build args…]: times the build and records the image's size.
build() {
    local runtime=$1; shift
    local image start seconds
    image=$(image_uri "$runtime")
    say "building $image"
    start=$(date +%s)
    : >"build/image-$runtime.log"
    # The install stage is tagged too, so that pruning dangling images keeps its cached dependency layer.
    if grep -q ' AS install$' "containers/$runtime/Dockerfile"; then
        DOCKER_BUILDKIT=0 docker build --quiet --network host -f "containers/$runtime/Dockerfile" "$@" --target install \
            -t "embedpipe-local/$runtime-install:cache" . >>"build/image-$runtime.log" 2>&1 \
            || { tail -30 "build/image-$runtime.log" >&2; say "building $image failed; whole log: build/image-$runtime.log"; exit 1; }
    fi
    DOCKER_BUILDKIT=0 docker build --quiet --network host -f "containers/$runtime/Dockerfile" "$@" -t "$image" . >>"build/image-$runtime.log" 2>&1 \
        || { tail -30 "build/image-$runtime.log" >&2; say "building $image failed; whole log: build/image-$runtime.log"; exit 1; }
    seconds=$(( $(date +%s) - start ))
    local bytes
    bytes=$(docker image inspect -f '{{.Size}}' "$image")
    printf '%-9s %-60s %6d MB %5d s\n' "$runtime" "$image" $((bytes / 1000000)) "$seconds"
    printf '{"runtime": "%s", "image": "%s", "bytes": %d, "build_seconds": %d}\n' "$runtime" "$image" "$bytes" "$seconds" >>"$REPORT.tmp"
}

cmd_images() {
    [ -x "$PY" ] || missing "no $PY: run 'make install' first (or set PYTHON to a Python with embedpipe installed)"
    mkdir -p build "$CACHE"
    docker_up
    local base
    base=$(python_base)
    wheels
    rm -f "$REPORT.tmp"
    say "base image of the builds: $base"
    build base --build-arg "PYTHON_BASE=$base"
    build dataflow --build-arg "SDK_BASE=$base" --build-arg WHEELHOUSE=build/wheelhouse
    build serve --build-arg "BASE_IMAGE=$(image_uri base)"
    # Local stand-in for the CUDA train image (not built here): fine_tune's tasks run in the CPU base
    # image under the name the compiled YAML gives the train image.
    docker tag "$(image_uri base)" "$(image_uri train)"
    say "tagged $(image_uri base) as $(image_uri train) (local CPU stand-in; the CUDA train image is not built here)"
    # Each build leaves the previous images' layers dangling (a few GB each): dropped, the cached
    # dependency layers (parents of the new images) kept.
    docker image prune --force >/dev/null
    "$PY" -c 'import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; json.dump(rows, open(sys.argv[2], "w"), indent=1)' "$REPORT.tmp" "$REPORT"
    rm -f "$REPORT.tmp"
    say "sizes and build times: $REPORT"
}

cmd_test() {
    SKIP_WHEN_MISSING=1
    [ -x "$PY" ] || missing "no $PY: run 'make install' first"
    docker_up
    cmd_images
    SKIP_WHEN_MISSING=""
    say "running tests/containers against these images (DOCKER_HOST=${DOCKER_HOST:-default})"
    set +e; "$PY" -m pytest tests/containers -m containers -p no:cacheprovider; local status=$?; set -e
    docker_down
    exit $status
}

case "${1:-}" in
    images) cmd_images ;;
    test) cmd_test ;;
    wheelhouse) mkdir -p build "$CACHE"; wheels ;;
    wheelhouse-cuda) mkdir -p build "$CACHE"; wheels_cuda ;;
    with-docker)
        shift
        [ $# -gt 0 ] || { say "usage: containers/local.sh with-docker COMMAND [ARGS…]"; exit 2; }
        docker_up
        set +e; "$@"; status=$?; set -e
        docker_down
        exit $status ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
