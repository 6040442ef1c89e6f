# kumiai — two commands matter: `make demo` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
# Debian's Python: the postgres user (Patroni) must be able to read the environment, so not a per-user Python.
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lab-deps demo test lint typecheck unit integration bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PYTHON) || { echo "need Debian's python3 (apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/kumiai town validate
	$(BIN)/kumiai town list

lint: setup
	$(BIN)/ruff check cli stacks tests bench
	$(BIN)/ruff format --check cli stacks tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not integration" -q

test: lint typecheck
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/plan.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
