# rank_sweep: every target installs what it needs first (.venv, CPU torch pinned).
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# One pytest worker per core; a test file stays on one worker, its tests in file order
# (module fixtures such as one sweep's stores are shared by consecutive tests).
TEST_WORKERS ?= auto

# Bytecode is cached on first import, for the modules a process actually imports: pip
# would compile all of site-packages one file at a time (2 of 3 install minutes here) and
# compileall -j0 still spent ~1 min on it; without any cache every process imports the
# stack in 22 s instead of 15 s. Some environments set PYTHONDONTWRITEBYTECODE: not for
# the commands these targets run.
unexport PYTHONDONTWRITEBYTECODE

.DEFAULT_GOAL := help
.PHONY: help install test test-full lint demo sweep baseline-full report ui optuna-ui study browser-deps clean clean-all

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# torch first, from the local CPU wheel; the constraints file keeps it there for every later install
	$(BIN)/pip install -qq --no-compile torch==2.13.0
	$(BIN)/pip install -qq --no-compile -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install torch (CPU) + the project with dev extras

test: $(STAMP) ## fast test tier (what CI runs)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-full: $(STAMP) ## all tests including `slow` (DeepSpeed op build, notebook)
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check rank_sweep tests benchmarks hydra_plugins
	$(BIN)/ruff format --check rank_sweep tests benchmarks hydra_plugins

RANKS ?= 4,8,16,32,64
ARGS  ?=

demo: $(STAMP) ## embedded-default sweep: ranks 1..16 + full baseline (tiny Wan, synthetic data, CPU)
	$(BIN)/python -m rank_sweep.world build  # once, before any job (cached; fingerprinted)
	$(BIN)/python -m rank_sweep -m +experiment=demo $(ARGS)
	@echo ""
	@echo "done. Look at:"
	@echo "  make report      -> reports/<sweep>/report.html, results.csv, plots"
	@echo "  make ui          -> MLflow UI on 127.0.0.1:5000; it prints the runs-table URL to open"
	@echo "  make optuna-ui   -> Optuna dashboard on http://127.0.0.1:8080 (trials, pruning)"

sweep: $(STAMP) ## LoRA rank sweep: make sweep RANKS=4,8,16 ARGS="data=ucf101 ..."
	$(BIN)/python -m rank_sweep -m lora.rank=$(RANKS) $(ARGS)

baseline-full: $(STAMP) ## full fine-tune baseline with the same data, eval and recipe
	$(BIN)/python -m rank_sweep finetune=full $(ARGS)

report: $(STAMP) ## comparison table, plots and HTML report from the MLflow store
	$(BIN)/python -m rank_sweep.report $(ARGS)

# The stores come from rank_sweep.paths, the place jobs, sweeps and the report ask too
# (so $RANK_SWEEP_TRACKING_URI moves all of them together).
ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 ($RANK_SWEEP_TRACKING_URI or sqlite:///mlflow.db)
	@echo "open the runs table: $$($(BIN)/python -m rank_sweep.paths ui-url)"
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/python -m rank_sweep.paths tracking-uri)" --host 127.0.0.1 --port 5000 --workers 1

SWEEP ?=
study: $(STAMP) ## blind A/B page on 127.0.0.1:8765: make study SWEEP=<id> (default: newest sweep)
	$(BIN)/python -m rank_sweep.study serve $(if $(SWEEP),--sweep $(SWEEP)) $(ARGS)

browser-deps: ## Debian Chromium + chromedriver for the A/B page's browser test (root, apt)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

optuna-ui: $(STAMP) ## Optuna dashboard (local) on 127.0.0.1:8080
	@test -x $(BIN)/optuna-dashboard || $(BIN)/pip install -qq -c constraints.txt optuna-dashboard
	$(BIN)/optuna-dashboard "$$($(BIN)/python -m rank_sweep.paths optuna-storage)" --host 127.0.0.1 --port 8080

# `make clean` removes rebuildable things only: outputs, reports and every cache entry
# except .cache/jobs (resume state: hours of training). The stores (mlflow.db, mlartifacts,
# optuna.db, journal) hold the results; `make clean-all` removes those too.
CLEAN_TOP := outputs multirun reports .pytest_cache .ruff_cache
STORES    := mlflow.db mlflow.db-shm mlflow.db-wal mlflow.db.lock mlartifacts optuna.db \
             optuna.db-shm optuna.db-wal optuna.db.lock optuna_journal.log .rank_sweep_locks \
             votes.db votes.db-shm votes.db-wal

clean: ## remove rebuildable caches and outputs; keeps the stores and resume state (.cache/jobs)
	@gone="$$(ls -d $(CLEAN_TOP) 2>/dev/null; find .cache -mindepth 1 -maxdepth 1 ! -name jobs 2>/dev/null)"; \
	 echo "removing: $${gone:-nothing}" | tr '\n' ' '; echo; rm -rf $$gone
	@find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
	@kept="$$(ls -d $(STORES) .cache/jobs 2>/dev/null)"; \
	 echo "kept: $${kept:-nothing} (make clean-all removes them)" | tr '\n' ' '; echo

clean-all: ## remove everything clean does plus the MLflow/Optuna stores and resume state
	@gone="$$(ls -d $(CLEAN_TOP) .cache $(STORES) 2>/dev/null)"; \
	 echo "removing, results and resume state included: $${gone:-nothing}" | tr '\n' ' '; echo; \
	 rm -rf $$gone
	@find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
