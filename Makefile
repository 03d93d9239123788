# make run    set up everything and start the bot (SQLite file, local redis-server, web on :3000)
# make test   run the whole test suite (starts its own redis-server and PostgreSQL)
# make lint   ruff (lint and format check), mypy, and the import contracts (lint-imports)
# make bench  print the benchmark figures
VENV := .venv
BIN := $(VENV)/bin
export PORT ?= 3000
export REDIS_URL ?= redis://127.0.0.1:6379/0
export HANDRAIL_CONFIG ?= handrail.yml

.PHONY: install run test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

run: install
	@test -f "$(HANDRAIL_CONFIG)" || { echo "No $(HANDRAIL_CONFIG): cp handrail.example.yml handrail.yml and describe your agents"; exit 2; }
	@command -v redis-server >/dev/null || { echo "Install redis-server first (apt-get install -y redis-server)"; exit 2; }
	@redis-cli -u "$(REDIS_URL)" ping >/dev/null 2>&1 || redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes
	$(BIN)/handrail web

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/approvals.py
	$(BIN)/python bench/escalation.py
	$(BIN)/python bench/gate.py
