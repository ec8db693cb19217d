# embedpipe: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
# constraints.txt pins numpy, pandas and scipy releases that need 3.11 (pyproject.toml: requires-python).
PYTHON_MIN := 3.11
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help check-python install run lint test test-containers compile images images-local run-docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install embedpipe and every extra ([all,dev]) with pinned versions (CPU torch 2.13.0)

# Says which Python was found and which is needed, before any venv is made from it (one shell line: make runs
# each recipe line in its own shell).
define check_python
found=$$($(PYTHON) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null); \
where=$$(command -v $(PYTHON) 2>/dev/null || echo $(PYTHON)); \
if [ -z "$$found" ]; then \
  echo "make: cannot run PYTHON=$(PYTHON) ($$where); embedpipe needs Python $(PYTHON_MIN) or newer." >&2; \
  echo "  Point make at one: make PYTHON=python$(PYTHON_MIN) $(or $(MAKECMDGOALS),install)" >&2; exit 1; \
elif ! printf '%s\n' $(PYTHON_MIN) "$$found" | sort -V -C; then \
  echo "make: PYTHON=$(PYTHON) ($$where) is Python $$found; embedpipe needs Python $(PYTHON_MIN) or newer" >&2; \
  echo "  (constraints.txt pins numpy, pandas and scipy releases that need it). Point make at one:" >&2; \
  echo "  make PYTHON=python$(PYTHON_MIN) $(or $(MAKECMDGOALS),install)   (or a full path; no venv was made)" >&2; exit 1; \
else echo "Python $$found ($$where)"; fi
endef

check-python: ## say whether $(PYTHON) is new enough to make the venv from (3.11+)
	@$(check_python)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { $(check_python); }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	# [all]: every extra (the `make run`/`make test` targets use them all); pyproject.toml says what each adds.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

run: install ## run the whole pipeline locally (kfp.local) on the example data
	$(VENV)/bin/embedpipe run

lint: install ## ruff check and ruff format --check (config in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install lint ## lint, then every test tier: library, components, kfp.local, the installed wheel, then test-containers
	$(PY) -m pytest -m "not containers"
	$(MAKE) test-containers

test-containers: install ## build the images here and run the pipeline, the serve and the Dataflow worker images (skips, saying why, without Docker)
	PYTHON=$(PY) bash containers/local.sh test

compile: install ## write pipeline and component YAML to build/
	$(PY) compile.py

clean: ## remove local runs and build outputs
	rm -rf build .embedpipe

images-local: install ## build the base, dataflow and serve images on this machine (starts its own dockerd if none answers)
	PYTHON=$(PY) bash containers/local.sh images

run-docker: images-local ## run the whole pipeline locally with every task in its image (kfp.local DockerRunner)
	PYTHON=$(PY) bash containers/local.sh with-docker $(VENV)/bin/embedpipe run --runner docker

images: install ## build and push the four images to Artifact Registry (needs Docker and the registry; not run here)
	PYTHON=$(PY) bash containers/local.sh wheelhouse
	PYTHON=$(PY) bash containers/local.sh wheelhouse-cuda
	for runtime in base train dataflow serve; do \
	  image=$$($(PY) -m embedpipe.images $$runtime) && \
	  docker build -f containers/$$runtime/Dockerfile --build-arg BASE_IMAGE=$$($(PY) -m embedpipe.images base) -t $$image . \
	  && docker push $$image || exit 1; \
	done
