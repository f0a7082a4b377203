# Two entry points for a fresh machine: `make demo` (the main job on built-in data) and `make test`.
# Each creates .venv and installs the project into it the first time.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-all lint typecheck

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m app.main --fname configs/pretrain/tiny_ijepa_cpu.yaml

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

# Style and types: ruff over the tree, mypy over jepa/, app/ and evals/ (settings in pyproject.toml).
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

typecheck: install
	$(PY) -m mypy
