# Plain entry points behind the README's commands. Everything runs from a local virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian's handwriting fonts the robustness suite renders digits from (trainer/font_digits.py;
# licences in bench/README.md). Rendered at run time only: nothing drawn from them is committed.
ROBUSTNESS_FONTS := fonts-dkg-handwriting fonts-breip fonts-bwht fonts-klee fonts-sjfonts \
  fonts-rufscript fonts-humor-sans fonts-kristi fonts-tomsontalks fonts-yusei-magic \
  fonts-kaushanscript fonts-dancingscript

.PHONY: help runtime setup browser postgresql robustness-fonts fashion-mnist run demo test lint baseline robustness bench docker-smoke docker-smoke-cluster docker-smoke-cluster-s3 clean
.DEFAULT_GOAL := help

help:  ## list the targets (this text)
	@awk -F ':.*## ' '/^[a-zA-Z_-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Two installs: what serving and training need (requirements.txt), and that plus the test and lint
# tools (requirements-dev.txt). `make run` needs only the first.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

runtime: $(VENV)/.runtime  ## create .venv with what serving and training need (no test or lint tools)

setup: $(VENV)/.installed  ## create .venv with the pinned dependencies, test and lint tools included

browser:  ## Debian's Chromium, which the browser tests drive (never a downloaded browser)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

postgresql:  ## Debian's PostgreSQL binaries: the cluster tests start a throwaway server from them when none answers on 127.0.0.1:5432
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends postgresql; }

robustness-fonts:  ## Debian's handwriting fonts for the robustness suite's `fonts` variant
	@missing=$$(for p in $(ROBUSTNESS_FONTS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi

run: runtime  ## serve the shipped baseline model on http://127.0.0.1:8000
	$(PY) -m service

demo: runtime  ## start the service, read the example digits (examples/) with the client, stop it
	PY=$(PY) bash examples/demo.sh

test: setup browser postgresql  ## lint, then the whole test suite (unit, HTTP, end-to-end, browser)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

baseline: runtime  ## retrain the shipped baseline (models/, for maintainers) on real MNIST and promote it
	$(PY) -m trainer train --preset baseline --promote --models-dir models

fashion-mnist:  ## Debian's Fashion-MNIST, the "not a digit" set the robustness suite scores (AUROC)
	@[ -d /usr/share/datasets/fashion-mnist ] || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends dataset-fashion-mnist; }

robustness: setup robustness-fonts fashion-mnist  ## the robustness suite on the current version, recorded in its manifest
	$(PY) -m trainer robustness current

bench: setup  ## the benchmarks (see bench/README.md)
	$(PY) bench/train_throughput.py
	$(PY) bench/presets.py --preset fast

docker-smoke:  ## build the image, docker compose up, predict, train, promote, down
	bash tests/docker/smoke.sh

docker-smoke-cluster:  ## docker compose --profile cluster up (stand-in postgres and nginx built here), predict on both replicas, train on a worker, promote, down
	bash tests/docker/cluster_smoke.sh

docker-smoke-cluster-s3:  ## the same with the registry on S3 (docker-compose.s3.yml; a moto stand-in for minio built here)
	SMOKE_REGISTRY=s3 bash tests/docker/cluster_smoke.sh

clean:  ## remove .venv and the tools' caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
