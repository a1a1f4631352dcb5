# Two commands: `make run` (the whole service, embedded) and `make test` (the whole suite).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: broker procs
.PHONY: run test test-unit lint fmt migrate seed check bench bench-quick bench-report chaos clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime  ## start the whole service on :8080 (SQLite + embedded Redis)
	$(BIN)/python -m config.embedded

broker: $(VENV)/.runtime  ## a local Kafka-protocol broker (Tansu, memory storage) on 127.0.0.1:9092 for the Procfile
	$(BIN)/python -m workers broker

procs: $(VENV)/.runtime  ## the Procfile's processes under honcho (DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS from the environment)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start $(PROCS_ARGS)

test: $(VENV)/.dev  ## unit + integration + e2e tiers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(VENV)/.dev
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(VENV)/.dev  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy config models web workers scheduler

fmt: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(VENV)/.runtime
	$(BIN)/python -m models migrate

seed: $(VENV)/.runtime
	$(BIN)/python -m models seed $(SEED_ARGS)

check: $(VENV)/.runtime
	$(BIN)/python -m models check

bench: $(VENV)/.dev  ## every benchmark against MariaDB + Redis (+ the Kafka-protocol broker), then docs/BENCHMARKS.md (< 30 min)
	$(BIN)/python -m bench.queue_bench
	$(BIN)/python -m bench.index_bench
	$(BIN)/python -m bench.pipeline_bench
	$(BIN)/python -m bench.expiry_bench
	$(BIN)/python -m bench.contention_bench
	$(BIN)/python -m bench.cache_bench
	$(BIN)/python -m bench.relay_bench
	$(BIN)/python -m bench.flash_sale
	$(BIN)/python -m bench.report

bench-quick: $(VENV)/.dev  ## the same benchmarks at a smaller scale (< 5 min), then docs/BENCHMARKS.md
	$(BIN)/python -m bench.queue_bench --tokens 200000 --samples 50 --issues 5000
	$(BIN)/python -m bench.index_bench --quick
	$(BIN)/python -m bench.pipeline_bench --requests 1000
	$(BIN)/python -m bench.expiry_bench --holds 300 --rounds 1
	$(BIN)/python -m bench.contention_bench --attempts 1000
	$(BIN)/python -m bench.cache_bench --seats 100000 -n 100 --duration 5s
	$(BIN)/python -m bench.relay_bench --events 5000 --before-seconds 3
	$(BIN)/python -m bench.flash_sale --quick
	$(BIN)/python -m bench.report

chaos: $(VENV)/.dev  ## a flash sale through the real processes under injected faults; prints the fault table (CHAOS_ARGS="--redis-cluster --quick ...")
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

bench-report: $(VENV)/.dev
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
