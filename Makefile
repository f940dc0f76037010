# rank_sweep: every target installs what it needs first (.venv, CPU torch pinned).
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-full lint demo sweep baseline-full report ui optuna-ui clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# torch first, from the local CPU wheel; the constraints file keeps it there for every later install
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install torch (CPU) + the project with dev extras

test: $(STAMP) ## fast test tier (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-full: $(STAMP) ## all tests including `slow` (DeepSpeed op build, notebook)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check rank_sweep tests benchmarks
	$(BIN)/ruff format --check rank_sweep tests benchmarks

demo: $(STAMP) ## embedded-default run (tiny Wan, synthetic data, CPU)
	$(BIN)/python -m rank_sweep

clean: ## remove caches, outputs and stores (keeps .venv)
	rm -rf .cache outputs multirun mlflow.db mlartifacts optuna.db optuna_journal.log reports .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
