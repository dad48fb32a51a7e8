# `make run` and `make test` set up everything they need on a fresh machine (Python 3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest check clean faults bench bench-store docs serve-docs soak-hostile

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

## docs: build the documentation site into site/ (--strict, offline); the suite builds it too (tests/test_docs.py)
docs: $(STAMP) docs/assets/mermaid.min.js
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## serve-docs: preview the site on http://127.0.0.1:8001
serve-docs: $(STAMP) docs/assets/mermaid.min.js
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# Mermaid's runtime, from its npm package, so that no page fetches it from a CDN (git-ignored).
# Without npm the site still builds; diagrams then show as their source.
MERMAID_VERSION := 11.4.1
docs/assets/mermaid.min.js:
	mkdir -p docs/assets
	@if command -v npm >/dev/null; then \
		tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mermaid@$(MERMAID_VERSION) >/dev/null) && \
		tar -xzf $$tmp/mermaid-$(MERMAID_VERSION).tgz -C $$tmp package/dist/mermaid.min.js && \
		cp $$tmp/package/dist/mermaid.min.js $@ && rm -rf $$tmp; \
	else echo "npm not found: diagrams show as their source" && touch $@; fi

## soak-hostile: memory and other users' latency while one sender posts ~1 MiB values (about 3 min)
soak-hostile: $(STAMP)
	$(BIN)/python bench/hostile_soak.py

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build site docs/assets/mermaid.min.js
