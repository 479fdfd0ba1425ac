# Two commands: `make book` (the website) and `make test` (everything checked).
# Both create .venv from requirements.lock when it is missing or older than the lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= book
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book test bench student pdf lint clean distclean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

book: setup  ## execute every chapter (profile $(PROFILE)) and build _build/html
	$(PY) -m ebmlib book --profile $(PROFILE)

test: setup  ## library tests, every chapter under smoke, every claim, the strict site build
	$(PY) -m ruff check ebmlib tests
	$(PY) -m pytest -q -ra tests

bench: setup  ## relaxation-loop benchmark, writes _build/bench.json
	$(PY) -m ebmlib bench

lint: setup
	$(PY) -m ruff check ebmlib tests

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
