# Latchkey — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium
SQLITE3 ?= /usr/bin/sqlite3
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run reset test test-fast lint bench bench-quick bench-ceilings bench-portal-busy bench-compare clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install Latchkey with its test tools

run: $(STAMP) ## Migrate the SQLite DB in instance/, seed demo data once, serve on :5000
	$(BIN)/latchkey db upgrade
	$(BIN)/latchkey seed-demo
	$(BIN)/latchkey serve

reset: ## Delete the local SQLite database (instance/latchkey.db) to start over
	rm -f instance/latchkey.db instance/latchkey.db-wal instance/latchkey.db-shm

$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(SQLITE3):
	@echo "installing Debian's sqlite3 (docs/deploy.md's backup command is tested)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3

test: $(STAMP) $(CHROMIUM) $(SQLITE3) ## Run every test: unit, API, PostgreSQL, Redis, live server, browser (TEST_WORKERS processes)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

test-fast: $(STAMP) ## Run the tests on SQLite only, without browser and live-server tests
	$(BIN)/pytest -m "not postgres and not redis and not browser and not live"

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check portal api tests bench
	$(BIN)/mypy

bench: $(STAMP) ## wrk benchmark on SQLite and PostgreSQL: latchkey serve (granian), the WSGI door and Flask alone, then bench-portal-busy
	@command -v wrk >/dev/null || { echo "installing Debian's wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/portal_busy.py $(PORTAL_BUSY_ARGS)

bench-portal-busy: $(STAMP) ## Token throughput while the portal is busy vs idle, SQLite and PostgreSQL (~3 min)
	$(BIN)/python bench/portal_busy.py $(PORTAL_BUSY_ARGS)

bench-compare: $(STAMP) ## This checkout vs AGAINST=<other checkout with its .venv>: token, introspection, wrong secret (~10 min)
	@test -n "$(AGAINST)" || { echo "make bench-compare AGAINST=/path/to/other/checkout"; exit 2; }
	@command -v wrk >/dev/null || { echo "installing Debian's wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python bench/compare.py --against $(AGAINST) $(COMPARE_ARGS)

bench-quick: ## A smoke run of the benchmark and of bench-portal-busy (~3 min): SQLite, granian, concurrency 16
	$(MAKE) bench BENCH_ARGS="--seconds 3 --warmup 1 --backends sqlite --worker-classes granian --concurrency 16 --lock-seconds 5" \
		PORTAL_BUSY_ARGS="--seconds 3 --events 10000 --backends sqlite"

bench-ceilings: $(STAMP) ## Introspection's ceiling (least work it can do) vs the floor, SQLite and PostgreSQL (~2 min)
	@command -v wrk >/dev/null || { echo "installing Debian's wrk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python bench/ceilings.py $(CEILING_ARGS)

clean: ## Remove the virtualenv and caches (keeps instance/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
