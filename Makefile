# kumiai — two commands matter: `make demo` and `make test`. Everything they need is installed from here.
SHELL := /bin/bash
# Debian's Python: the postgres user (Patroni) must be able to read the environment, so not a per-user Python.
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup lab-deps demo test lint typecheck unit integration docs bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PYTHON) || { echo "need Debian's python3 and python3-venv (apt-get install python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# PostgreSQL 15, pgBackRest and etcd from Debian; installs only what is missing.
lab-deps:
	scripts/install-lab-deps.sh

# The main job on the embedded lab: both sites, the lab towns onboarded, synthetic data, status.
demo: setup lab-deps
	scripts/demo.sh

lint: setup
	$(BIN)/ruff check cli stacks tests bench scripts
	$(BIN)/ruff format --check cli stacks tests bench scripts
	$(BIN)/yamllint -s .
	$(BIN)/lint-imports --no-cache
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint -q

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not integration" -q

integration: setup lab-deps
	$(BIN)/pytest -m integration -q

# Lint, type check, then every test: the fast unit tier and the integration tier against real services.
test: lint typecheck lab-deps
	$(BIN)/pytest -q

docs: setup
	$(BIN)/python scripts/gen_cli_reference.py

bench: setup lab-deps
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/diff.py
	$(BIN)/python bench/onboard.py
	$(BIN)/python bench/drill.py
	$(BIN)/python bench/dr.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/tls.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
