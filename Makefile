# Two commands: `make book` (the website) and `make test` (everything checked).
# Both create .venv from requirements.lock when it is missing or older than the lock.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= book
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book test check mutate bench gpu-check student pdf browser data lint clean distclean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Executes only the chapters whose inputs changed (code cells, parameters, the ebmlib modules they use,
# requirements.lock, files they read); FORCE=1 executes all. Builds the site, the student edition and the PDF.
book: setup browser $(if $(filter paper,$(PROFILE)),data)  ## execute what changed (profile $(PROFILE)); build site, student edition, PDF
	$(PY) -m ebmlib book --profile $(PROFILE) $(if $(FORCE),--force)

test: setup browser data  ## library tests, every chapter under smoke, every claim, the strict site build, the browser checks
	$(PY) -m ruff check ebmlib tests
	$(PY) -m pytest -q -ra tests

check: setup  ## the edit-test loop: lint and the fast library tests (no chapters, no site), under a minute
	$(PY) -m ruff check ebmlib tests
	$(PY) -m pytest -q -m "not slow and not cuda" -p no:cacheprovider tests

# Mutation testing of the science modules and the fused loop and trainer (mutmut, pinned in requirements.lock;
# not part of `make test`).
# Survivors are killed by a test or listed with the reason they are equivalent in tests/mutants_equivalent.txt.
mutate: setup  ## mutation testing of dynamics, gradients, response, estimators, learning, measures, comparison, _loop, _trainloop (long)
	rm -rf mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m mutmut run --max-children 2 || true  # one thread: forked children must not inherit an OpenMP pool
	$(PY) -m ebmlib.book.mutation mutants tests/mutants_equivalent.txt

student: setup  ## the student edition (solutions removed) into _build/student; executes missing chapters first
	$(PY) -m ebmlib student --profile $(PROFILE)

pdf: setup browser  ## the book as one PDF, _build/pdf/book.pdf (single-page HTML printed by headless Chromium)
	$(PY) -m ebmlib pdf --profile $(PROFILE)

# Headless Chromium for the browser checks and the PDF (Debian package `chromium`; CI runs as root).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	    else echo "warning: chromium is missing and cannot be installed here (not root): the browser checks will skip (fail in CI)"; fi; }

# Fashion-MNIST's IDX files (Debian package dataset-fashion-mnist, 31 MB) for the paper profile and its loader test.
data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	    else echo "note: dataset-fashion-mnist is not installed (not root): the paper profile of 07-learning needs it"; fi; }

bench: setup  ## relaxation-loop benchmark, writes _build/bench.json
	$(PY) -m ebmlib bench --chapters

gpu-check:  ## on a machine with a CUDA GPU: the CUDA tests and the GPU benchmark into _build/ (.ci/gpu-check)
	bash .ci/gpu-check

lint: setup
	$(PY) -m ruff check ebmlib tests

clean:
	rm -rf _build mutants

distclean: clean
	rm -rf $(VENV)
