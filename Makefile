# gpuflows — two commands on a fresh machine: `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: up test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs only when the dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $(TOOLS_STAMP)

## Install and start the platform: Prefect server (SQLite), pools, blocks, deployments, a worker.
up: $(STAMP)
	$(BIN)/gpuflows up

## Install and run the tests (CI runs exactly this).
test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/python -m ruff check flows tasks blocks tests benchmarks
	$(TOOLS)/bin/checkov --directory k8s --directory images --compact --quiet --skip-download
	git ls-files -z | xargs -0 $(BIN)/detect-secrets-hook --baseline .secrets.baseline
	$(BIN)/python -m pytest -q

## Benchmarks: figures for the README, with the peers side by side.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/python -m ruff check flows tasks blocks tests benchmarks
	$(BIN)/python -m ruff format --check flows tasks blocks tests benchmarks

clean:
	rm -rf $(VENV) .gpuflows .pytest_cache .ruff_cache .hypothesis
