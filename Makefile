# gpuflows — two commands on a fresh machine: `make up` and `make test`.
# Every install comes from a lock: uv.lock for the project (all of its dependency tree, hashed),
# requirements-tools.txt for Checkov, requirements-uv.txt for uv itself; the trainer image's pins are derived
# from uv.lock. `make lock` refreshes them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
export UV_PYTHON := $(PYTHON)
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: up test bench lint lock images clean

$(UV): requirements-uv.txt
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements-uv.txt
	touch $(UV)

# --locked: fails, instead of re-resolving, when pyproject.toml and uv.lock disagree.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --extra train --quiet
	touch $(STAMP)

$(TOOLS_STAMP): requirements-tools.txt $(UV)
	$(UV) venv --quiet --allow-existing $(TOOLS)
	$(UV) pip sync --quiet --require-hashes --python $(TOOLS)/bin/python requirements-tools.txt
	touch $(TOOLS_STAMP)

# The forecast benchmark's yardstick (statsforecast) in its own venv: it pins pandas < 3, production must not.
$(PEERS_STAMP): benchmarks/peers/requirements.txt $(UV)
	$(UV) venv --quiet --allow-existing $(PEERS)
	$(UV) pip sync --quiet --require-hashes --python $(PEERS)/bin/python benchmarks/peers/requirements.txt
	touch $(PEERS_STAMP)

## Install and start the platform: Prefect server (SQLite), pools, blocks, deployments, a worker.
up: $(STAMP)
	$(BIN)/gpuflows up

## Install and run the tests (CI runs exactly this).
test: $(STAMP) $(TOOLS_STAMP)
	$(UV) lock --check --quiet
	$(BIN)/python -m ruff check flows tasks blocks tests benchmarks images
	$(TOOLS)/bin/checkov --directory k8s --directory images --compact --quiet --skip-download
	git ls-files -z | xargs -0 $(BIN)/detect-secrets-hook --baseline .secrets.baseline
	$(BIN)/python -m pytest -q

## Refresh the locks after editing pyproject.toml or requirements-tools.in (`make lock ARGS=--upgrade` for all).
lock: $(UV)
	$(UV) lock $(ARGS)
	$(UV) pip compile requirements-tools.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --generate-hashes --quiet $(ARGS) -o requirements-tools.txt
	$(UV) pip compile benchmarks/peers/requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet $(ARGS) -o benchmarks/peers/requirements.txt
	$(PYTHON) images/trainer/lock.py

## Benchmarks: figures for the README, with the peers side by side.
bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python -m benchmarks

## Build the flows and metrics-exporter images (rootful podman, a debootstrap base) and start them to check.
## Not part of `make test`: several minutes, root, and installs Debian packages. See the README.
images: $(STAMP)
	PYTHON=$(BIN)/python images/build.sh

lint: $(STAMP)
	$(BIN)/python -m ruff check flows tasks blocks tests benchmarks images
	$(BIN)/python -m ruff format --check flows tasks blocks tests benchmarks images

clean:
	rm -rf $(VENV) $(UV_VENV) $(TOOLS) $(PEERS) .gpuflows .pytest_cache .ruff_cache .hypothesis
