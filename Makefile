# Set-up, demo, tests and docs in one place. Every target creates the
# virtual environment first if needed.
#
#   make demo      set up, then run the FLAIR baseline on the embedded data
#   make test      set up, then run the default test suite (slow tests excluded)
#                  and the docstring examples
#   make test-scale  set up, then run the loopback tests of the engines that run
#                  anomseg at scale (a local Dask cluster, torchrun); in .ci/run
#   make lint      set up, then check style and formatting with ruff
#   make test-min  run the default suite against the lowest versions of the
#                  dependencies (.ci/requirements-min.txt), at 2 torch threads;
#                  without the optional deepbet (anomseg[brain]), whose tests skip
#   make docs      set up, then build the HTML documentation offline, running
#                  the gallery, and check that no page shows a local path; in
#                  .ci/run
#
# torch is installed first and pinned, so that a CPU wheel of 2.13.0 present
# locally is used and no CUDA packages are pulled in. Override TORCH to pick
# another build, e.g. `make test TORCH="torch==2.13.0 --index-url <cpu index>"`.

PYTHON ?= python3
VENV ?= .venv
VENV_MIN ?= .venv-min
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-scale test-all test-min lint docs clean

$(BIN)/.anomseg-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs,brain,cluster]"
	touch $@

setup: $(BIN)/.anomseg-installed

demo: setup
	$(BIN)/anomseg demo --overwrite

test: setup
	$(BIN)/python -m pytest

test-scale: setup
	$(BIN)/python -m pytest -m scale

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(VENV_MIN)/bin/.anomseg-installed: pyproject.toml .ci/requirements-min.txt
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet $(TORCH)
	$(VENV_MIN)/bin/python -m pip install --quiet -r .ci/requirements-min.txt
	$(VENV_MIN)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV_MIN)/bin/python -m pip check
	touch $@

test-min: $(VENV_MIN)/bin/.anomseg-installed
	ANOMSEG_TEST_THREADS=2 $(VENV_MIN)/bin/python -m pytest

# The pages must not show a path of the build machine (the checkout, a
# temporary or /work/ folder, the installed packages): grep lists any page
# that does, and the target fails.
docs: setup
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html
	@if grep -rIlE "$(CURDIR)|/work/|/tmp/|site-packages" docs/_build/html; then \
		echo "make docs: the pages above show a path of the build machine" >&2; exit 1; fi

clean:
	rm -rf docs/_build docs/auto_examples docs/gen_modules docs/sg_execution_times.rst anomseg_demo_output $(VENV_MIN)
