# The README's two commands: `make run` (set up + dvc repro) and `make test` (set up + pytest).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages call `python`: put the venv first on PATH so dvc runs them with it.
export PATH := $(CURDIR)/$(BIN):$(PATH)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: run test setup fashion-mnist label-curve bench
run: $(STAMP) fashion-mnist
	dvc repro

test: $(STAMP) fashion-mnist
	pytest -q

setup: $(STAMP)

label-curve: $(STAMP)  ## queue labeled_frac x ssl.method experiments and draw reports/label_curve.png
	python bench/label_curve.py

bench: $(STAMP)  ## issue #5: the notebooks vs the project -> bench/results/*.json and a table (CPU: ~12 min)
	bash bench/run_all.sh

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	# grep drops pip's notes about this machine's absent local package mirrors; pipefail keeps pip's exit status.
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

# Debian's offline copy of Fashion-MNIST: the default pipeline's first mirror, and the data of the real-data
# tests. Installed when missing on a Debian host where we are root; elsewhere the download stage falls back
# to the upstream mirror and the real-data tests skip (pytest -ra lists them with this reason).
fashion-mnist:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: no /usr/share/datasets/fashion-mnist and cannot install it (needs root on Debian:" \
	  "apt-get install dataset-fashion-mnist); the real-data tests will skip"; fi
