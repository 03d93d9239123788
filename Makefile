# make run    set up a virtualenv and start the bot on :3000 (local mode without Slack credentials)
# make client install the Python client and its framework adapters into the virtualenv (for examples/)
# make test   install what the tests need from the OS (scripts/test-deps), then run the whole suite
#             (it starts its own redis-server and PostgreSQL, and drives Debian's chromium)
# make lint   ruff (lint and format check), mypy, the import contracts (lint-imports), hadolint on the
#             Dockerfile and compose.yaml against the Compose Specification's schema
# make bench  run every benchmark (bench/run) and print their figures as one JSON object
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install client dev run test lint bench
install: $(VENV)/.installed  # what the bot needs to run
client: $(VENV)/.client  # the Python client with every framework adapter (what examples/ needs)
dev: $(VENV)/.dev  # and what the tests, the lint checks and the benchmarks need

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.client: $(VENV)/.installed client/pyproject.toml client/pins.txt
	$(BIN)/pip install -q -e './client[openai-agents,pydantic-ai,langgraph,mcp]' -c client/pins.txt
	touch $@

$(VENV)/.dev: $(VENV)/.client
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

# Serves until stopped (Ctrl-C). Without Slack credentials it starts local mode (the page at
# http://localhost:3000/local); without REDIS_URL it runs as the only process on its database.
run: install
	$(BIN)/handrail web

test: dev
	scripts/test-deps
	$(BIN)/pytest -n auto --dist worksteal

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

bench: dev  # every benchmark under bench/, one after another: one JSON object (bench/run --help)
	$(BIN)/python bench/run
