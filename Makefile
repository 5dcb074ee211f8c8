# Two commands on a fresh clone: `make run` (the whole pipeline) and `make test` (the tests).
# Everything runs from .venv; nothing needs activating (DVC by hand: bin/dvc, which finds .venv itself).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.txt)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup data init run test test-fast lint format ui lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed ## create .venv with the pinned requirements and the churn package (editable)

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

data: setup ## obtain the raw data: DVC remote, else regenerate the sample and check it against its .dvc pointer
	$(BIN)/python -m churn.tools.rawdata

init: setup ## create the MLflow store and experiment once, before anything runs in parallel
	$(BIN)/python -m churn.tools.store init

run: data init ## the main job: setup, data, tracking store, `dvc repro`, registry check, summary
	$(BIN)/dvc repro
	@$(BIN)/python -m churn.tools.registry sync
	@$(BIN)/python -m churn.tools.store summary

PYTEST_ARGS ?=
# Test processes side by side (pytest-xdist), each taking whole test files (--dist loadfile: a module's fixtures,
# such as a repository that ran the pipeline, are built once). More than the cores: most of an integration
# test's time is spent waiting on the dvc, MLflow and server processes it starts.
TEST_WORKERS ?= 4

test: setup ## run every test (unit, stages, integration, warmfork) and print the wall time (TEST_WORKERS=4 PYTEST_ARGS=)
	@start=$$(date +%s); $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall"; exit $$status

test-fast: setup ## the edit loop: unit and stage tests only (under a minute)
	$(BIN)/python -m pytest -n 2 --dist loadfile tests/unit tests/stages $(PYTEST_ARGS)

lint: setup ## ruff lint and format check: the checks the git hooks run (make hooks) on every file
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup ## ruff fix and format
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

ui: init ## open the MLflow UI on http://127.0.0.1:5000 for the local store
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/python -m churn.tools.store uri)" --host 127.0.0.1 --port 5000

lock: setup ## re-pin requirements.txt from its direct pins
	sed '/^# --- Transitive/,$$d' requirements.txt | grep -E '^[a-zA-Z]' > $(VENV)/direct.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --no-header --no-annotate $(VENV)/direct.txt -o $(VENV)/locked.txt
	@echo "compare $(VENV)/locked.txt with the Transitive section of requirements.txt"

clean: ## remove stage outputs and caches (keeps .venv, the MLflow store and the DVC cache)
	rm -rf data/prepared data/features models reports/figures .staging-* .pytest_cache .ruff_cache

# --- Experiments -----------------------------------------------------------------------------
.PHONY: sweep compare
JOBS ?= 2

sweep: init ## queue every family's grid from params `sweep` as DVC experiments and run them (JOBS=2)
	$(BIN)/python -m churn.tools.sweep --run --jobs $(JOBS)

compare: setup ## rank experiments (DVC + MLflow), sync dvc.exp_rev tags, write reports/compare.html
	$(BIN)/python -m churn.tools.compare

# --- Teamwork: share experiments, a review report, the model as a DVC artifact, git hooks -------
.PHONY: share fetch report artifact hooks
EXP ?=
GIT_REMOTE ?= origin
BASE ?= main
VERSION ?= champion
REV ?= HEAD

share: ## make share EXP=name: its git refs to GIT_REMOTE (origin), its outputs to the DVC remote
	@test -n "$(EXP)" || { echo "usage: make share EXP=<experiment> (bin/dvc exp list names them)" >&2; exit 2; }
	$(BIN)/dvc exp push $(GIT_REMOTE) $(EXP)

fetch: ## make fetch EXP=name: a teammate's experiment, listed beside yours (then bin/dvc exp apply name)
	@test -n "$(EXP)" || { echo "usage: make fetch EXP=<experiment> (bin/dvc exp list $(GIT_REMOTE) names them)" >&2; exit 2; }
	$(BIN)/dvc exp pull $(GIT_REMOTE) $(EXP)
	$(BIN)/dvc exp show --no-pager --only-changed

report: setup ## reports/review.md: params, metrics, champion, plots against BASE (main)
	$(BIN)/python -m churn.tools.review --base '$(BASE)'

artifact: ## tag registry VERSION (champion) as DVC artifact version churn-model@vN.0.0 at REV (HEAD)
	$(BIN)/python -m churn.tools.artifact tag '$(VERSION)' --rev '$(REV)'

hooks: setup ## install the git hooks of .pre-commit-config.yaml (ruff; dvc status, dvc push, dvc checkout)
	$(BIN)/pre-commit install

# --- Tuning: an Optuna study on the train split's CV, tracked in MLflow, applied through DVC -----
.PHONY: tune
TRIALS ?=
TIMEOUT ?=
STORAGE ?=
WORKERS ?=
APPLY ?=

# bin/py: the stages' OpenBLAS kernel, so trials score exactly as train does, on any host.
tune: init ## Optuna study (after `make run`): make tune [TRIALS=n] [TIMEOUT=s] [STORAGE=url [WORKERS=n]] [APPLY=1]
	bin/py -m churn.tools.tune $(if $(TRIALS),--trials $(TRIALS)) $(if $(TIMEOUT),--timeout $(TIMEOUT)) \
		$(if $(STORAGE),--storage '$(STORAGE)') $(if $(WORKERS),--workers $(WORKERS)) \
		$(if $(filter 1 yes true,$(APPLY)),--apply)

# --- The team's tracking server without Docker: docker-compose.yml's `mlflow` service as local processes ---
.PHONY: server

server: setup ## the compose stack's MLflow server here: MLFLOW_BACKEND_STORE_URI (PostgreSQL), admin from the env
	exec $(BIN)/python -m churn.tools.server

# --- Registry, serving, batch scoring --------------------------------------------------------
.PHONY: registry serve
PORT ?= 5001
MAX_REQUEST_MB ?= 10

registry: ## list the registry's versions with aliases and metrics (python -m churn.tools.registry --help)
	$(BIN)/python -m churn.tools.registry list

serve: ## serve the champion on http://127.0.0.1:5001/invocations: probability and label per row (PORT=, MAX_REQUEST_MB=)
	exec $(BIN)/python -m churn.tools.serve --host 127.0.0.1 --port $(PORT) --max-request-mb $(MAX_REQUEST_MB)

# --- Benchmarks: not tests; each figure a ratio against a baseline measured in the same run ---
.PHONY: bench
BENCH_ARGS ?=

bench: setup ## overhead, scaling, no-op, sweeps, setup -> bench/results/ (BENCH_ARGS="--large --only scaling")
	$(BIN)/python -m bench.run $(BENCH_ARGS)
