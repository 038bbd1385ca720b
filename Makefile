# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing, installs gicl with its dependencies, then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gicl-installed

.PHONY: demo test test-slurm fuzz lint benchmarks

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m gicl demo

# Two pytest workers (pytest-xdist), whole files each so that a module's shared fit runs
# once: the suite is mostly one-core work, and the CI machine has two.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test-slurm: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slurm tests/test_slurm.py

# A longer seeded mutation campaign over .gic files of every codec; prints the counts.
FUZZ_MUTANTS ?= 20000
fuzz: $(STAMP)
	GICL_FUZZ_MUTANTS=$(FUZZ_MUTANTS) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_bitstream_fuzz.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Rerun every figure's command in docs/benchmarks.md and rewrite its output (long: run it on a
# quiet machine). The authors' code runs from GICL_GLC_CHECKOUT and GICL_CONTROLGIC_CHECKOUT
# (figures needing an unset one are skipped, with the reason); ONLY=TEXT picks the figures
# whose title or command contains TEXT, e.g. make benchmarks ONLY="bench data".
benchmarks: $(STAMP)
	$(PY) -m gicl bench report $(if $(ONLY),--only "$(ONLY)")
