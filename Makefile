# The two commands (see README): `make run` and `make test`. Both are re-runnable.
SHELL := /bin/bash
.DEFAULT_GOAL := run
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3001

.PHONY: run test serve-uvicorn lint bench setup setup-dev clean

run: setup
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py serve --port $(PORT)

test:
	bash scripts/test.sh

# Production-like: uvicorn workers (needs REDIS_URL and DATABASE_URL for more than one).
serve-uvicorn: setup
	$(PY) manage.py serve --server uvicorn --port $(PORT)

lint: setup-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy .

bench: setup-dev
	bash bench/run_all.sh

setup:
	bash scripts/bootstrap.sh

setup-dev:
	bash scripts/bootstrap.sh --dev

clean:
	rm -rf $(VENV) node_modules var/test-* test-artifacts
