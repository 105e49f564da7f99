# weir: every README command is a target here. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help
.PHONY: help setup setup-dev system-deps demo test test-unit test-integration lint format bench deploy-check chaos chaos-fast bench-peers bundle clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev,train]'
	@touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime ## create .venv with the runtime install (no torch)

setup-dev: $(VENV)/.dev ## create .venv with the runtime, dev tools and the train extra (torch)

system-deps: ## Debian packages the full suite uses: JDK + Maven (Kafka), prometheus, chromium (needs root)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  openjdk-17-jre-headless maven prometheus chromium >/dev/null

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

bench: $(VENV)/.dev ## engine, scheduler, service and metrics benchmarks (print figures)
	$(BIN)/python -m bench.engines
	$(BIN)/python -m bench.scheduler
	$(BIN)/python -m bench.service
	$(BIN)/python -m bench.metrics

bench-peers: $(VENV)/.dev ## weir vs naive loop, fixed window, Faust, Quix Streams and the echo floor on Apache Kafka
	$(PIP) install -e '.[bench]'
	$(BIN)/python -m bench.peers --out build/peers

deploy-check: $(VENV)/.dev ## promtool, hadolint, kubernetes-validate, dashboard and compose checks
	$(BIN)/python -m pytest tests/unit/test_deploy.py

chaos: $(VENV)/.dev ## reliability and security scenarios against Apache Kafka: one table + chaos-results.json
	$(BIN)/python -m chaos --json chaos-results.json

chaos-fast: $(VENV)/.dev ## the CI subset of the chaos scenarios
	$(BIN)/python -m chaos --fast --json chaos-results.json

bundle: $(VENV)/.dev ## retrain engines/default_bundle on the synthetic market feed (1-2 min CPU)
	$(BIN)/weir replay synth --kind market --seconds 300 --seed 7 --out build/bundle/synth-market-s7.parquet
	$(BIN)/weir model build --feed build/bundle/synth-market-s7.parquet --task trading --window 16 --seed 0 --threads 1 --out engines/default_bundle
	$(BIN)/weir model verify engines/default_bundle

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
