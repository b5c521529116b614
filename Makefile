# The README's two commands: `make run` (set up + dvc repro) and `make test` (set up + pytest).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages call `python`: put the venv first on PATH so dvc runs them with it.
export PATH := $(CURDIR)/$(BIN):$(PATH)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: run test setup
run: $(STAMP)
	dvc repro

test: $(STAMP)
	pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# grep drops pip's notes about this machine's absent local package mirrors; pipefail keeps pip's exit status.
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@
