# Quick start: `make demo` scores a few photos with the bundled model, `make test` runs the test suite.
# Needs only Python 3.11 (`python3`); everything else goes into the virtualenv .venv.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Rewritten by every install: `make venv` reinstalls when the package metadata is newer than this file.
INSTALLED := $(VENV)/.installed
DEMO_DIR := demo_images
TEST_WORKERS ?= 2

# The BIQ2021 sample and the pristine photos live in ../shared/data on the project's machines; tests skip what
# they cannot find. A variable already set in the environment wins.
SHARED_DATA := ../shared/data
ifeq ($(origin METAQAP_BIQ2021_SAMPLE),undefined)
  ifneq ($(wildcard $(SHARED_DATA)/biq2021-sample),)
    export METAQAP_BIQ2021_SAMPLE := $(abspath $(SHARED_DATA)/biq2021-sample)
  endif
endif
ifeq ($(origin METAQAP_PRISTINE_DIR),undefined)
  ifneq ($(wildcard $(SHARED_DATA)/pristine),)
    export METAQAP_PRISTINE_DIR := $(abspath $(SHARED_DATA)/pristine)
  endif
endif

.PHONY: venv demo test clean distclean

venv: $(INSTALLED)

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): setup.cfg pyproject.toml | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -e ".[dev]"
	touch $@

demo: venv
	$(VENV_PYTHON) examples/make_demo_images.py $(DEMO_DIR)
	HF_HUB_OFFLINE=1 $(VENV)/bin/metaqap score $(DEMO_DIR)

# --dist loadscope keeps each test module on one worker, so module-scoped fixtures are built once; one torch
# thread per worker (unless OMP_NUM_THREADS says otherwise), as the workers already share the cores.
test: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV_PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadscope -q

# `clean` keeps the virtualenv (a 6 GB install); `distclean` removes it too.
clean:
	rm -rf $(DEMO_DIR) build dist .pytest_cache src/*.egg-info
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
