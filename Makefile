# Two commands keep this project usable on a fresh machine:
#   make serve   set up a virtualenv and run Messenger on its embedded defaults
#   make test    set up a virtualenv and run the test suite (needs MariaDB and Redis; see README)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test check lint typecheck bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/messenger serve

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check messenger acl broker handler bridge api

typecheck: $(VENV)/.installed
	$(BIN)/mypy

check: lint typecheck

bench: $(VENV)/.installed
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
