# Two commands for a new user: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/data
# uv, pinned, in a folder of its own: it installs .venv from uv.lock.
UV_VERSION := 0.13.9
UV_ENV := .uv
UV ?= $(UV_ENV)/bin/uv
# The optional extras .venv gets (`make venv EXTRAS="dev cuda"` on a GPU machine).
EXTRAS ?= dev
export EXTRAS   # the tests check .venv against the lock with the same extras
# Nothing but packages from the registry: uv must use $(PYTHON), never fetch an interpreter.
export UV_PYTHON_DOWNLOADS := never
# TLS trusts the system's certificate store, as pip does (uv's own roots know no company or
# sandbox proxy's authority: without this, such a network refuses every download).
export UV_SYSTEM_CERTS := 1
# glibc gives XLA's CPU buffers transparent huge pages: training steps 10-11% faster
# (experiments/huge_pages.py, which the entry points fall back on where this is not set).
GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
export GLIBC_TUNABLES

.PHONY: demo test notebooks venv lock check-lock clean

$(UV_ENV)/bin/uv:
	$(PYTHON) -m venv $(UV_ENV)
	$(UV_ENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# .venv holds exactly what uv.lock pins (the project editable, with EXTRAS); it is synced again
# when pyproject.toml or uv.lock change. Bytecode is compiled at install (20 s on 2 cores): uv
# leaves it to the first import otherwise, and where PYTHONDONTWRITEBYTECODE is set every
# process compiles TensorFlow again (importing it took 13 s without, 7 s with; the tests start
# dozens of processes).
$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(MAKE) --no-print-directory check-lock
	$(UV) sync --frozen --compile-bytecode $(EXTRAS:%=--extra %) --python $(PYTHON) --quiet
	touch $(STAMP)

venv: $(STAMP)

# A lock that no longer matches pyproject.toml stops every target here (no network needed).
check-lock: | $(UV)
	@$(UV) lock --check --offline --quiet 2>/dev/null || { \
	  echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock" >&2; exit 1; }

# Re-resolves every dependency to its newest allowed release: a deliberate upgrade, committed
# with the test run that checked it.
lock: | $(UV)
	$(UV) lock --upgrade

# The tests and every notebook executed top to bottom (nbmake; outputs not saved), on two
# workers, test by test (the slow training tests share one module): most of a test's time is
# single-threaded (tracing, XLA compilation, Python). Research notebooks run on their `tiny`
# variant here (they train what they show); `make notebooks` runs them on real runs. A cell may
# take 15 minutes before it counts as hung, not nbmake's 5: on a machine half as fast as usual,
# beside the other worker, compression.ipynb's cell that trains three tiny models took over 5.
# The heaviest tests go first (tests/conftest.py, HEAVY), so the workers end on short ones; the
# 20 slowest are listed at the end, to keep the budget in view. Without huge pages: the tests'
# processes live seconds, and the kernel's zeroing of huge pages cost them more system time (37 s
# against 18 s for the kill test, the eval CLI's tests and mwer.ipynb) than faster steps gave back.
test: $(STAMP)
	GLIBC_TUNABLES= ASR_HUGE_PAGES=0 ASR_NOTEBOOK_VARIANT=tiny $(PY) -m pytest -q -n 2 --dist load --nbmake --nbmake-timeout=900 --durations=20 \
	  tests notebooks

# Re-executes the notebooks and saves their outputs (commit them: reviewers read them as run).
notebooks: $(STAMP)
	cd notebooks && for nb in *.ipynb; do ../$(VENV)/bin/jupyter-execute --inplace --timeout=600 "$$nb" || exit 1; done

demo: $(STAMP)
	$(PY) -m experiments.demo --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) $(UV_ENV) .pytest_cache
