# Two commands on a fresh clone: `make run` (the whole pipeline) and `make test` (the tests).
# Everything runs from .venv; nothing needs activating.

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
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $@

data: setup ## obtain the raw data: DVC remote, else regenerate the sample and check it against its .dvc pointer
	$(BIN)/python -m churn.rawdata

init: setup ## create the MLflow store and experiment once, before anything runs in parallel
	$(BIN)/python -m churn.tracking init

run: data init ## the main job: setup, data, tracking store, `dvc repro`, summary
	$(BIN)/dvc repro
	@$(BIN)/python -m churn.tracking summary

test: setup ## run every test (unit, stages, integration)
	$(BIN)/python -m pytest

lint: setup ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup ## ruff fix and format
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

ui: init ## open the MLflow UI on http://127.0.0.1:5000 for the local store
	$(BIN)/mlflow ui --backend-store-uri "$$($(BIN)/python -m churn.tracking uri)" --host 127.0.0.1 --port 5000

lock: setup ## re-pin requirements.txt from its direct pins
	sed '/^# --- Transitive/,$$d' requirements.txt | grep -E '^[a-zA-Z]' > $(VENV)/direct.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 --no-header --no-annotate $(VENV)/direct.txt -o $(VENV)/locked.txt
	@echo "compare $(VENV)/locked.txt with the Transitive section of requirements.txt"

clean: ## remove stage outputs and caches (keeps .venv, the MLflow store and the DVC cache)
	rm -rf data/prepared data/features models reports/figures .staging-* .pytest_cache .ruff_cache
