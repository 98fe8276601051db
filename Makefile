# dagwright: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps install binaries lint format typecheck test unit demo bench crds clean constraints console screenshots

help:
	@echo "make demo   - local cluster + Redis + operator + API, runs examples/training-pipeline.yaml"
	@echo "make test   - lint, type checks and the whole test suite (real cluster and Redis)"
	@echo "make bench  - benchmarks (bench/), not part of make test"

# System packages (redis-server) and the Python virtualenv.
deps:
	@hack/ensure-system-deps.sh

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[cluster,dev]'
	touch $@

# Pin the installed dependency set (after a change to pyproject.toml's).
constraints: install
	$(VENV)/bin/pip install -q -e '.[cluster,dev,bench]'
	{ sed -n 1,2p constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^dagwright'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

install: deps $(VENV)/.installed

# Builds kube-apiserver & co, etcd, kwok and helm from Go modules, once, into
# ~/.cache/dagwright (or $$DAGWRIGHT_CACHE), keyed by version.
binaries: install
	$(PY) -m dagwright.devcluster.build

lint: install
	$(VENV)/bin/ruff check dagwright tests bench
	$(VENV)/bin/ruff format --check dagwright tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile worker-image/Dockerfile
	hack/check-console.sh

# The web console's TypeScript, compiled into the package (the build is committed).
console:
	cd console && npm ci --no-audit --no-fund --loglevel=error && node_modules/.bin/tsc -p .

# The README's console screenshots, taken by the browser tests.
screenshots: install binaries
	DAGWRIGHT_SCREENSHOTS=docs/console $(VENV)/bin/pytest tests/e2e/test_console.py $(PYTEST_ARGS)

format: install
	$(VENV)/bin/ruff format dagwright tests bench
	$(VENV)/bin/ruff check --fix dagwright tests bench

typecheck: install
	$(VENV)/bin/mypy dagwright tests bench

unit: install
	$(VENV)/bin/pytest -m "not cluster" $(PYTEST_ARGS)

test: lint typecheck binaries
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Local control plane (or: make demo DEMO_ARGS=--kind), Redis, operator and API,
# then examples/training-pipeline.yaml followed live. Ctrl-C stops it all.
DEMO_ARGS ?=
demo: install
	$(PY) -m dagwright.devcluster demo $(DEMO_ARGS)

# Benchmarks (bench/): fresh local control planes, under 30 minutes on 2 cores.
# BENCH_ARGS=--quick tries the harness in a few minutes.
BENCH_ARGS ?=
bench: binaries
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[cluster,dev,bench]'
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
