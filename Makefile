# Set-up is automatic: every target below creates (or reuses) the local virtual environment .venv.
# torch==2.13.0 is installed first on purpose: it is the CPU wheel on this machine's disk, and any
# looser torch requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: main test docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,bench,docs]"
	touch $@

main: $(VENV)/.installed
	$(VENV)/bin/pml-bench compare

# The test suite, then the documentation build (warnings are errors).
test: $(VENV)/.installed
	$(PY) -m pytest -q
	$(MAKE) docs

# HTML documentation in docs/_build/html; -E re-reads every page so that no warning hides in a
# cached page.
docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -E -q -b html docs docs/_build/html
