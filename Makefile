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
	$(BIN)/pip install -qq torch==2.13.0
	$(BIN)/pip install -qq -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install torch (CPU) + the project with dev extras

test: $(STAMP) ## fast test tier (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-full: $(STAMP) ## all tests including `slow` (DeepSpeed op build, notebook)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check rank_sweep tests benchmarks
	$(BIN)/ruff format --check rank_sweep tests benchmarks

RANKS ?= 4,8,16,32,64
ARGS  ?=

demo: $(STAMP) ## embedded-default sweep: ranks 4..64 + full baseline (tiny Wan, synthetic data, CPU)
	$(BIN)/python -m rank_sweep.world build  # once, before any job (cached; fingerprinted)
	$(BIN)/python -m rank_sweep -m +experiment=demo $(ARGS)
	@echo ""
	@echo "done. Look at:"
	@echo "  make report      -> reports/<sweep>/report.html, results.csv, plots"
	@echo "  make ui          -> MLflow UI on http://127.0.0.1:5000 (experiment rank_sweep)"
	@echo "  make optuna-ui   -> Optuna dashboard on http://127.0.0.1:8080 (trials, pruning)"

sweep: $(STAMP) ## LoRA rank sweep: make sweep RANKS=4,8,16 ARGS="data=ucf101 ..."
	$(BIN)/python -m rank_sweep -m lora.rank=$(RANKS) $(ARGS)

baseline-full: $(STAMP) ## full fine-tune baseline with the same data, eval and recipe
	$(BIN)/python -m rank_sweep finetune=full $(ARGS)

report: $(STAMP) ## comparison table, plots and HTML report from the MLflow store
	$(BIN)/python -m rank_sweep.report $(ARGS)

ui: $(STAMP) ## MLflow UI bound to 127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

optuna-ui: $(STAMP) ## Optuna dashboard (local) on 127.0.0.1:8080
	@test -x $(BIN)/optuna-dashboard || $(BIN)/pip install -qq -c constraints.txt optuna-dashboard
	$(BIN)/optuna-dashboard sqlite:///$(CURDIR)/optuna.db --host 127.0.0.1 --port 8080

clean: ## remove caches, outputs and stores (keeps .venv)
	rm -rf .cache outputs multirun mlflow.db mlartifacts optuna.db optuna_journal.log reports .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
