# deqbench: two commands do all set-up on a fresh machine.
#   make run   - create .venv if needed, install, run the quickstart sweep, write reports/quickstart/
#   make test  - create .venv if needed, install, run the test suite
#   make paper - the paper's comparison at CPU scale, write reports/paper_shape/
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deqbench-installed
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export RAY_AUTH_MODE ?= disabled

.PHONY: run paper test test-fast bench memory install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so nothing else can pull a CUDA build
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q torch
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m harness.submit jobs/quickstart.yaml

# the DEQ paper's comparison at CPU scale (jobs/paper_shape.yaml): 40 runs, reports/paper_shape/
paper: $(STAMP)
	$(PY) -m harness.submit jobs/paper_shape.yaml

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) -m solvers.bench

memory: $(STAMP)
	$(PY) -m models.memory

clean:
	rm -rf $(VENV) .cache .pytest_cache
