# Set-up is automatic: every target below creates (or reuses) the local virtual environment .venv.
# torch and torchvision are pinned first, as a pair that imports together: torch==2.14.1 with
# torchvision==0.29.1 lie on this machine's disk (CUDA builds that also run on the CPU). The local
# torch==2.13.0 CPU wheel has no torchvision release that imports beside it, and an unpinned torch
# would pull another multi-GB build. The package itself keeps torch open-ended for users.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: main test test-fast lint docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,bench,vision,docs]"
	touch $@

main: $(VENV)/.installed
	$(VENV)/bin/pml-bench study compare

# Lint, format and type checks, the test suite, then the documentation build (warnings are errors).
test: $(VENV)/.installed
	$(MAKE) lint
	$(PY) -m pytest -q
	$(MAKE) docs

# ruff (lint and format) on the whole tree and mypy on the package, as pyproject.toml configures
# them and .pre-commit-config.yaml runs them before a commit.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The unit tests only: everything but the tests marked slow (end-to-end runs, subprocesses), in
# under a minute on 2 CPU cores.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -q

# HTML documentation in docs/_build/html; -E re-reads every page so that no warning hides in a
# cached page.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html
