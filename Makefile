# The README's two commands are `make demo` and `make test`; the rest are steps of those.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
# Python may cache compiled modules: every service process the tests start imports the same
# code, and without the cache each start compiles it again (1.7 s instead of 0.5 s here).
unexport PYTHONDONTWRITEBYTECODE
UV := uv
PYTEST := $(UV) run --frozen pytest

.PHONY: help bootstrap services tools demo test lint types unit integration chaos bench

help:
	@echo "make demo   - set everything up, run the services, place a mix of orders, show how each ended"
	@echo "make test   - lint, types, unit, integration, end-to-end, browser and a short chaos run"
	@echo "make chaos  - the long chaos scenarios;  make bench - the benchmark"

bootstrap:  ## uv, then the virtual environment exactly as uv.lock says
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

services:
	@scripts/ensure-services.sh

tools:  ## Debian packages the tests use for real (Prometheus, Chromium and its driver)
	@scripts/ensure-tools.sh

lint: bootstrap
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen lint-imports

types: bootstrap
	$(UV) run --frozen mypy libs contracts orderflow order_svc payment_svc inventory_svc saga

unit: bootstrap tools
	$(PYTEST) tests/unit -q

integration: bootstrap services
	$(PYTEST) tests/integration -q

# The chaos runs restart the shared broker and database and time their faults: they run first,
# alone. The rest (each test in a vhost and databases of its own) runs on two workers.
test: bootstrap services tools lint types
	$(PYTEST) tests/chaos tests/cluster -q -p no:cacheprovider --durations=5
	$(PYTEST) tests/unit tests/integration tests/e2e -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

bench: bootstrap services  ## the benchmark (~15 min, with the three-node broker cluster), the console's pages (~1 min), then a 20-minute soak at half its max
	@scripts/cluster.sh start >/dev/null
	$(UV) run --frozen orderflow bench --json var/bench.json --cluster-url "$$(scripts/cluster.sh url)"
	$(UV) run --frozen orderflow bench console
	$(UV) run --frozen orderflow bench soak --half-of var/bench.json --minutes 20

demo: bootstrap services  ## set up, start the services, place a mix of orders, show how each ended
	$(UV) run --frozen orderflow demo

CHAOS_SCENARIOS := kill-storm replicas commit-boundaries broker-restart database-restart network-faults duplicates poison hostile-clients
chaos: bootstrap services  ## the long chaos runs: 180 s and over 2,000 orders per scenario
	@for s in $(CHAOS_SCENARIOS); do \
	  $(UV) run --frozen orderflow chaos --scenario $$s --duration 180 --rate 12 --seed 1 || exit 1; \
	done
	@scripts/cluster.sh start >/dev/null
	ORDERFLOW_AMQP_URL="$$(scripts/cluster.sh url)" ORDERFLOW_RABBITMQ_NODE=of1@localhost \
	  $(UV) run --frozen orderflow chaos --scenario broker-node-kill --duration 180 --rate 12 --seed 1
