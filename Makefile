# `make run` and `make test` set up everything they need on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest check clean faults bench bench-store

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fsbridge needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $@

## run: write .env with fresh secrets on the first run, then serve on 127.0.0.1:8000
run: $(STAMP)
	$(BIN)/fsbridge init-env
	$(BIN)/fsbridge serve

## test: lint, type-check and run the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

check: test

## bench: throughput, latency, drain and memory beside baselines in the same run (needs Debian's wrk)
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python bench/run.py

## bench-store: what intake's durable SQLite write costs alone (no HTTP, no threads): the floor under intake
bench-store: $(STAMP)
	$(BIN)/python bench/store_floor.py

## faults: every fault-injection scenario, in-process and with real processes; the table lands in bench/faults.md
faults: $(STAMP)
	mkdir -p bench
	FSBRIDGE_FAULTS_REPORT=bench/faults.md $(BIN)/pytest -q -s -p no:cacheprovider \
		tests/faults tests/test_process.py tests/test_replicas.py
	@cat bench/faults.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
