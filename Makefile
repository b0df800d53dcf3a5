# otbridge — the targets a newcomer can guess. Every target does the setup it needs, once.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system-tools demo test lint bench up down status clean

## setup: virtualenv + pinned Python deps, and the stack's Java artifacts (mvn); idempotent
setup: $(INSTALLED) system-tools
	@$(BIN)/otbridge stack fetch

# outside clients the tests read the simulators with (Debian's mbpoll); installed when we can
system-tools:
	@command -v mbpoll >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update -qq && apt-get install -y -qq mbpoll; } >/dev/null 2>&1; } || \
	  echo "note: mbpoll is not installed (apt-get install mbpoll); the outside-client test needs it"

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# quiet unless it fails: pip and the build backend's notices go to a log, shown on failure
	@{ $(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip && \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[modbus,opcua,ui,dev]'; \
	} > $(VENV)/pip-install.log 2>&1 || { cat $(VENV)/pip-install.log; exit 1; }
	@touch $@

## demo: the plant end to end on the local stack
demo: setup
	$(BIN)/otbridge demo $(DEMO_ARGS)

## test: every test, against the real stack (started if not running, stopped after)
# The outage tests (a broker of their own, killed and kept down for minutes: mostly waiting)
# run in a second pytest beside the rest; their output follows the main run's.
OUTAGE_LOG := .otbridge/test-outage.log
test: setup
	@mkdir -p .otbridge; \
	$(BIN)/python -m pytest -m outage -p no:cacheprovider $(PYTEST_ARGS) > $(OUTAGE_LOG) 2>&1 & \
	side=$$!; \
	$(BIN)/python -m pytest -m "not outage" $(PYTEST_ARGS); main=$$?; \
	wait $$side; outage=$$?; \
	echo "== the outage tests (run beside the rest; log $(OUTAGE_LOG)):"; tail -n 60 $(OUTAGE_LOG); \
	[ $$outage = 5 ] && outage=0; \
	[ $$main = 5 ] && main=0; \
	exit $$(( main || outage ))

lint: $(INSTALLED)
	$(BIN)/ruff check otbridge connectors simulators jobs bench tests
	$(BIN)/mypy otbridge connectors simulators jobs bench

## bench: job throughput on a preloaded backlog (BENCH_ARGS="--quick" for a small run)
bench: setup
	$(BIN)/otbridge stack up
	$(BIN)/otbridge bench $(BENCH_ARGS)

up: setup
	$(BIN)/otbridge stack up

down: $(INSTALLED)
	$(BIN)/otbridge stack down

status: $(INSTALLED)
	$(BIN)/otbridge stack status

## clean: stop the stack and remove the state folder (topics, schemas, logs, fetched jars)
clean: down
	rm -rf .otbridge
