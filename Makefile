# embedpipe: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help install run test compile images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install embedpipe with pinned versions (CPU torch 2.13.0)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: install ## run the whole pipeline locally (kfp.local) on the example data
	$(VENV)/bin/embedpipe run

test: install ## run the test suite
	$(PY) -m pytest

compile: install ## write pipeline and component YAML to build/
	$(PY) compile.py

clean: ## remove local runs and build outputs
	rm -rf build .embedpipe

images: install ## build and push the four images to Artifact Registry (needs Docker; not runnable here)
	rm -rf build/wheels && $(PY) -m pip wheel --no-deps --wheel-dir build/wheels .
	for runtime in base train dataflow serve; do \
	  image=$$($(PY) -m embedpipe.images $$runtime) && \
	  docker build -f containers/$$runtime/Dockerfile --build-arg BASE_IMAGE=$$($(PY) -m embedpipe.images base) -t $$image . \
	  && docker push $$image || exit 1; \
	done
