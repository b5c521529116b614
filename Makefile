# The README's two commands: `make run` (set up + dvc repro) and `make test` (set up + pytest).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages call `python`: put the venv first on PATH so dvc runs them with it.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test setup
run: $(STAMP)
	dvc repro

test: $(STAMP)
	pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $@
