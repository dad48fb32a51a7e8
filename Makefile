# `make run` and `make test` set up everything they need on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The per-user decision, compiled with mypyc from its typed source (setup.py); COMPILE=0 runs it as Python.
COMPILE ?= 1
DECISION := $(VENV)/.decision-$(COMPILE)
DECISION_SOURCES := $(wildcard src/fsbridge/flows/aggregations/*.py)
DECISION_BUILDS  := src/fsbridge_decision__mypyc.*.so src/fsbridge/flows/aggregations/*.so

.PHONY: run test lint typecheck pytest check clean faults bench bench-store

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fsbridge needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $@

# Rebuilt whenever a source of the decision changes: a stale build would shadow the edit.
$(DECISION): $(STAMP) setup.py $(DECISION_SOURCES)
	rm -f $(VENV)/.decision-* $(DECISION_BUILDS)
ifeq ($(COMPILE),1)
	FSBRIDGE_COMPILE=1 $(BIN)/python setup.py --quiet build_ext --inplace
	# A module whose C did not change is copied with its old time: the build is current as of now.
	touch $(DECISION_BUILDS)
endif
	touch $@

## run: write .env with fresh secrets on the first run, then serve on 127.0.0.1:8000
run: $(DECISION)
	$(BIN)/fsbridge init-env
	$(BIN)/fsbridge serve

## test: lint, type-check and run the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/ruff format --check src tests bench setup.py
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(DECISION)
	$(BIN)/pytest

check: test

## bench: throughput, latency, drain and memory beside baselines in the same run (needs Debian's wrk)
bench: $(DECISION)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python bench/run.py

## bench-store: what intake's durable SQLite write costs alone (no HTTP, no threads): the floor under intake
bench-store: $(DECISION)
	$(BIN)/python bench/store_floor.py

## faults: every fault-injection scenario, in-process and with real processes; the table lands in bench/faults.md
faults: $(DECISION)
	mkdir -p bench
	FSBRIDGE_FAULTS_REPORT=bench/faults.md $(BIN)/pytest -q -s -p no:cacheprovider \
		tests/faults tests/test_process.py tests/test_replicas.py
	@cat bench/faults.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build $(DECISION_BUILDS)
