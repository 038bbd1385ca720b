# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing, installs gicl with its dependencies, then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gicl-installed

.PHONY: demo test test-slurm lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m gicl demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-slurm: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slurm tests/test_slurm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
