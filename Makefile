# Two commands on a fresh clone: `make run` (the whole pipeline) and `make test` (the tests).
# Everything runs from .venv; nothing needs activating (DVC by hand: bin/dvc, which finds .venv itself).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := $(shell sed -n 's/^uv==//p' requirements.txt)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup data init run test lint format ui lock clean

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

run: data init ## the main job: setup, data, tracking store, `dvc repro`, summary
	$(BIN)/dvc repro
	@$(BIN)/python -m churn.tools.store summary

test: setup ## run every test (unit, stages, integration)
	$(BIN)/python -m pytest

lint: setup ## ruff lint and format check
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

# --- Tuning: an Optuna study on the train split's CV, tracked in MLflow, applied through DVC -----
.PHONY: tune
TRIALS ?=
TIMEOUT ?=
STORAGE ?=
APPLY ?=

tune: init ## Optuna study (needs `make run` first): make tune [TRIALS=n] [TIMEOUT=s] [STORAGE=url] [APPLY=1]
	$(BIN)/python -m churn.tools.tune $(if $(TRIALS),--trials $(TRIALS)) $(if $(TIMEOUT),--timeout $(TIMEOUT)) \
		$(if $(STORAGE),--storage '$(STORAGE)') $(if $(filter 1 yes true,$(APPLY)),--apply)

# --- Registry, serving, batch scoring --------------------------------------------------------
.PHONY: registry serve
PORT ?= 5001

registry: ## list the registry's versions with aliases and metrics (python -m churn.tools.registry --help)
	$(BIN)/python -m churn.tools.registry list

serve: ## serve the champion with `mlflow models serve` on http://127.0.0.1:5001/invocations (PORT=...)
	@uri="$$($(BIN)/python -m churn.tools.registry uri)" && store="$$($(BIN)/python -m churn.tools.store uri)" && \
	echo "serving $$uri on http://127.0.0.1:$(PORT)/invocations" && \
	MLFLOW_TRACKING_URI="$$store" exec $(BIN)/mlflow models serve -m "$$uri" --env-manager local \
		--host 127.0.0.1 --port $(PORT)

# --- Benchmarks: not tests; each figure a ratio against a baseline measured in the same run ---
.PHONY: bench
BENCH_ARGS ?=

bench: setup ## overhead, scaling, no-op, sweeps, setup -> bench/results/ (BENCH_ARGS="--large --only scaling")
	$(BIN)/python -m bench.run $(BENCH_ARGS)
