# Two commands set everything up: `make demo` and `make test`.
# Both create .venv when it is missing and (re)install the package only when settings.ini or setup.py changed.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.melanet_installed
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg
export OMP_WAIT_POLICY := PASSIVE
DEMO_OUT ?= runs/demo
# the demo trains at 64 px (its drawn lesions need no more): every stage runs and reports, in minutes on 2 CPU cores
DEMO_ARGS ?= --size 64

OPTIONS := $(BIN)/python -c "from melanet_nb.cli import write_run_options; write_run_options()"

readme: $(STAMP)
	$(BIN)/nbdev_export && $(OPTIONS) && $(BIN)/nbdev_clean && $(BIN)/python tests/make_readme.py

.PHONY: readme demo test venv check-export nbdev-test pytest clean-venv bench

venv: $(STAMP)

$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/melanet run --out $(DEMO_OUT) $(DEMO_ARGS)

# `make test` runs every notebook once, under papermill with smoke=True (tests/test_notebooks.py): that executes every
# cell nbdev_test would, and the slow-flagged demo sections too. `make nbdev-test` runs nbdev_test on its own.
test: $(STAMP) check-export pytest

# notebooks are the source of truth: exporting and cleaning them must change nothing
check-export: $(STAMP)
	@snap=$$(mktemp -d); cp -r melanet_nb nbs $$snap/; \
	cp README.md $$snap/; $(BIN)/nbdev_export && $(OPTIONS) && $(BIN)/nbdev_clean && $(BIN)/python tests/make_readme.py; \
	if diff -r -q -x __pycache__ -x .ipynb_checkpoints $$snap/melanet_nb melanet_nb && \
	   diff -r -q -x __pycache__ -x .ipynb_checkpoints $$snap/nbs nbs && diff -q $$snap/README.md README.md; then \
	   echo "check-export: exported code, options file and README match the notebooks, notebooks are clean"; rm -rf $$snap; \
	else echo "check-export FAILED: run make readme (nbdev_export, nbdev_clean, README) and commit the result"; rm -rf $$snap; exit 1; fi

nbdev-test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/bench_cyclegan.py
	$(BIN)/python bench/bench_classifier.py

clean-venv:
	rm -rf $(VENV)
