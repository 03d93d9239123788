# make run    set up everything and start the bot (SQLite file, a redis-server on REDIS_URL's port if none
#             answers there, stopped with it; web on :3000)
# make test   run the whole test suite (starts its own redis-server and PostgreSQL)
# make lint   ruff (lint and format check), mypy, and the import contracts (lint-imports)
# make bench  print the benchmark figures
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

# Which redis-server `make run` must start: nothing when Redis answers at REDIS_URL (from the
# environment or .env, read as handrail reads it), else the port of REDIS_URL when it names this
# machine; a sentence and exit code 2 otherwise.
define REDIS_TO_START
import sys, urllib.parse
from redis import Redis, RedisError
from bot.config import ConfigError, load_settings
try:
    url = load_settings().redis_url
except ConfigError as error:
    sys.exit("\n".join(f"handrail: {line}" for line in error.lines()))
try:
    Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
    sys.exit(0)
except RedisError:
    pass
parts = urllib.parse.urlsplit(url)
if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
    sys.exit(f"Nothing answers at REDIS_URL ({parts.hostname}): start that Redis, or point REDIS_URL at this machine")
print(parts.port or 6379)
endef
export REDIS_TO_START

# Serves until stopped (Ctrl-C). When nothing answers at REDIS_URL, a redis-server is started on its
# port for this run and stopped with it (its log: .run/redis-<port>.log).
run: install
	@port=$$($(BIN)/python -c "$$REDIS_TO_START") || exit 2; \
	if [ -z "$$port" ]; then exec $(BIN)/handrail web; fi; \
	command -v redis-server >/dev/null || { echo "Install redis-server first (apt-get install -y redis-server)"; exit 2; }; \
	mkdir -p .run; \
	redis-server --port $$port --bind 127.0.0.1 --save '' --appendonly no >.run/redis-$$port.log 2>&1 & redis=$$!; \
	trap 'kill $$redis 2>/dev/null; wait $$redis 2>/dev/null' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM HUP; \
	tries=0; until redis-cli -p $$port ping >/dev/null 2>&1; do \
	  tries=$$((tries + 1)); \
	  if [ $$tries -gt 100 ] || ! kill -0 $$redis 2>/dev/null; then echo "redis-server did not start on port $$port: see .run/redis-$$port.log"; exit 2; fi; \
	  sleep 0.05; \
	done; \
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
	$(BIN)/python bench/statements.py
	$(BIN)/python bench/escalation.py
	$(BIN)/python bench/gate.py
	$(BIN)/python bench/storm.py
