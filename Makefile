# The README's two commands: `make run` (set up + dvc repro) and `make test` (set up + pytest).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages call `python`: put the venv first on PATH so dvc runs them with it.
export PATH := $(CURDIR)/$(BIN):$(PATH)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: run test test-quick check setup fashion-mnist label-curve pareto bench docs lock lock-verify lock-cpu image-test
run: $(STAMP) fashion-mnist
	dvc repro

test: $(STAMP) fashion-mnist
	pytest -q

# The edit-test loop: everything but the end-to-end runs of dvc, training and the container (marked slow).
test-quick: $(STAMP) fashion-mnist
	pytest -q -m "not slow"

# The committed files that are derived from code, checked against it (CI runs this on a clean clone; in a
# workspace, `dvc exp run -S`, `make label-curve` and `make docs` legitimately change them).
check: $(STAMP)
	@python -m fewlabels.params --yaml | diff -u params.yaml - \
	  || { echo "params.yaml is not the schema's defaults: python -m fewlabels.params --yaml > params.yaml"; exit 1; }
	python -m bench.tables --check

setup: $(STAMP)

# One host: `make label-curve`. Several: `make label-curve SHARD=0/2 GIT_REMOTE=origin` on one, SHARD=1/2 on
# the other (each pushes its experiments), then `make label-curve ARGS=--plot-only GIT_REMOTE=origin` anywhere.
label-curve: $(STAMP)  ## queue labeled_frac x ssl.method x seed experiments and draw reports/label_curve.png
	python bench/label_curve.py $(if $(SHARD),--shard $(SHARD)) $(if $(GIT_REMOTE),--git-remote $(GIT_REMOTE)) $(ARGS)

pareto: $(STAMP)  ## queue tuned skip vs fixmatch and label_propagation at three CPU-minute budgets x 3 seeds, draw reports/pareto.png (CPU: hours)
	python bench/pareto.py $(ARGS)

bench: $(STAMP)  ## the notebooks vs the project -> bench/results/*.json and a table (CPU: ~12 min)
	bash bench/run_all.sh

docs: $(STAMP)  ## rewrite the docs' measured tables from bench/results/ and reports/{label_curve,pareto}*.csv
	python -m bench.tables

# One lock per platform users have, all at the same versions (`make lock` writes the three): this host's.
PLATFORM := $(shell uname -s)-$(shell uname -m)
LOCK_Linux-x86_64  := requirements.lock
LOCK_Linux-aarch64 := requirements-linux-aarch64.lock
LOCK_Darwin-arm64  := requirements-macos-arm64.lock
LOCK := $(LOCK_$(PLATFORM))

$(STAMP): pyproject.toml $(LOCK)
	@[ -n "$(LOCK)" ] || { echo "error: no lock for $(PLATFORM): supported are Linux x86_64, Linux aarch64 and" \
	  "macOS arm64 (Apple silicon); on another, run in the container (docs/container.md)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# Every package from the lock, each file checked against its sha256; then this project, editable, with the
	# locked setuptools. grep drops pip's notes about this machine's absent local package mirrors; pipefail keeps
	# pip's exit status.
	$(BIN)/pip install -q --require-hashes -r $(LOCK) 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

# The locks: every package of the venv (and, Linux x86_64's, of the image) at one version, with the sha256 of each
# of its files on PyPI, resolved for CPython 3.11 on each platform whatever the host: requirements.lock for Linux
# x86_64, then Linux aarch64 and macOS 14+ on Apple silicon held at its versions (PyPI's torch is a CUDA build on
# both Linux platforms). Re-resolving keeps the pins already there while pyproject.toml allows them (add
# UV_FLAGS=--upgrade to move everything to the newest release).
LOCK_WITH := uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 $(UV_FLAGS)
lock: $(STAMP)
	$(LOCK_WITH) --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' -o $(LOCK_Linux-x86_64)
	$(LOCK_WITH) --python-platform aarch64-manylinux_2_28 --custom-compile-command 'make lock' \
	  -c $(LOCK_Linux-x86_64) -o $(LOCK_Linux-aarch64)
	MACOSX_DEPLOYMENT_TARGET=14.0 $(LOCK_WITH) --python-platform aarch64-apple-darwin \
	  --custom-compile-command 'make lock' -c $(LOCK_Linux-x86_64) -o $(LOCK_Darwin-arm64)

# Every file of each lock downloaded for its platform and checked against its sha256 (GBs; needs PyPI): what
# `pip install --require-hashes` on that platform would fetch. --no-deps: pip evaluates dependency markers for
# this host, not the target; each lock lists every package. antlr4-python3-runtime 4.9.3 (hydra's pure-Python
# parser runtime, via dvc) is on PyPI as source only. pip matches manylinux tags exactly: give it every glibc.
MANYLINUX = $(foreach v,$(shell seq 28 -1 17),--platform manylinux_2_$(v)_$(1)) --platform manylinux2014_$(1)
lock-verify: $(STAMP)
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	for lock in "$(LOCK_Linux-x86_64) $(call MANYLINUX,x86_64)" \
	            "$(LOCK_Linux-aarch64) $(call MANYLINUX,aarch64)" \
	            "$(LOCK_Darwin-arm64) --platform macosx_14_0_arm64"; do \
	  set -- $$lock; echo "$$1: $$(grep -c '^[a-z0-9].*==' $$1) packages"; file=$$1; shift; \
	  $(BIN)/pip download -q --no-deps --python-version 3.11 --implementation cp --only-binary :all: \
	    --no-binary antlr4-python3-runtime --require-hashes -r $$file -d $$dir/$$file "$$@" 2>&1 \
	    | { grep -v '^WARNING: Location' || true; }; \
	  echo "$$file: $$(ls $$dir/$$file | wc -l) files downloaded, every sha256 as locked"; \
	done

# requirements-cpu.lock: the same with PyTorch's CPU build of torch/torchvision, from PyTorch's own index (named in
# the lock, so the image build finds it), the other packages held at requirements.lock's versions.
lock-cpu: $(STAMP)
	$(LOCK_WITH) --python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock-cpu' -c requirements.lock \
	  --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match --emit-index-url \
	  -o requirements-cpu.lock

# The container built and run for real with docker or podman (docker/smoke.sh says what it checks); both in
# parallel with `make image-test ENGINE="podman docker"`, as CI runs it.
image-test:
	bash docker/smoke.sh

# Debian's offline copy of Fashion-MNIST: the default pipeline's first mirror, and the data of the real-data
# tests. Installed when missing on a Debian host where we are root; elsewhere the download stage falls back
# to the upstream mirror and the real-data tests skip (pytest -ra lists them with this reason).
fashion-mnist:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: no /usr/share/datasets/fashion-mnist and cannot install it (needs root on Debian:" \
	  "apt-get install dataset-fashion-mnist); the real-data tests will skip"; fi
