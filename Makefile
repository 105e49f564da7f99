# weir: every README command is a target here. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help
.PHONY: help setup setup-dev demo test test-unit test-integration lint format bench bundle clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime ## create .venv with the runtime install (no torch)

setup-dev: $(VENV)/.dev ## create .venv with the runtime and dev tools

demo: $(VENV)/.runtime ## run the demo on the embedded broker
	$(BIN)/weir demo

test: $(VENV)/.dev ## the whole suite: unit + integration against Apache Kafka (started for you)
	$(BIN)/python -m pytest tests

test-unit: $(VENV)/.dev ## unit tests only (no broker)
	$(BIN)/python -m pytest tests/unit

test-integration: $(VENV)/.dev ## integration tests against Apache Kafka
	$(BIN)/python -m pytest tests/integration

lint: $(VENV)/.dev ## ruff, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev ## engine and scheduler benchmarks (print figures)
	$(BIN)/python -m bench.engines
	$(BIN)/python -m bench.scheduler

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
