# Prefect Event Router. `make demo` runs the whole loop; `make test` runs the tests.
# Both create .venv and install what they need; nothing else is assumed but python3.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PREFECT := $(VENV)/bin/prefect
WORK_POOL ?= event-router-pool
MESSAGES := '{"message_type": "SampleMsg"}' '{"message_type": "ParamsMsg", "payload": {"name": "Gordon Bennett"}}'

AZURITE := .tools/node_modules/.bin/azurite-queue

.PHONY: install tools demo test lint bench setup-prefect-test start-prefect start-worker start-azurite run-example reset-prefect-test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

## Brokers the tests start themselves: Azurite (Azure Storage emulator) from npm.
tools: $(AZURITE)

$(AZURITE):
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@3.37.0

## The whole loop on this machine: server, work pool, worker, deployments, router, two runs.
demo: install
	$(PY) -m devtools.demo

## Lint, then every test (a real Prefect server is started by the tests themselves).
test: install tools lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Every benchmark (~7 min): prints a table, writes bench/results/latest.json and a dated copy.
## Never part of `make test`. `make bench BENCH_ARGS=--quick` tries it out with small counts.
bench: install tools
	$(PY) -m bench $(BENCH_ARGS)

# The original tool's targets, against the server at PREFECT_API_URL.

## Create the process work pool and deploy the example flows and the router.
setup-prefect-test: install
	$(PREFECT) work-pool create $(WORK_POOL) --type process --overwrite
	$(PREFECT) --no-prompt deploy --all

## A local Prefect server in the foreground (UI at http://127.0.0.1:4200).
start-prefect: install
	$(PREFECT) server start --host 127.0.0.1

## A process worker for the example deployments, in the foreground.
start-worker: install
	PREFECT_WORKER_QUERY_SECONDS=2 $(PREFECT) worker start --pool $(WORK_POOL)

## The router on test.json, fed the original README's two sample messages.
run-example: install
	printf '%s\n' $(MESSAGES) | $(PY) flows/router.py test.json

## Azurite's queue service on 127.0.0.1:10001, in memory, in the foreground.
start-azurite: tools
	$(AZURITE) --queueHost 127.0.0.1 --queuePort 10001 --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --loose

## Remove what setup-prefect-test created.
reset-prefect-test: install
	-$(PREFECT) --no-prompt deployment delete "Test Flow/integration-test"
	-$(PREFECT) --no-prompt deployment delete "Test Flow with params/integration-test"
	-$(PREFECT) --no-prompt deployment delete "event-router/event-router"
	-$(PREFECT) --no-prompt work-pool delete $(WORK_POOL)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
