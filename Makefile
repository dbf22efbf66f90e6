# Two commands for a new user: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test notebooks venv clean

# The virtual environment is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The tests and every notebook executed top to bottom (nbmake; outputs not saved), on two
# workers, test by test (the slow training tests share one module): most of a test's time is
# single-threaded (tracing, XLA compilation, Python). Research notebooks run on their `tiny`
# variant here (they train what they show); `make notebooks` runs them on real runs.
test: $(STAMP)
	ASR_NOTEBOOK_VARIANT=tiny $(PY) -m pytest -q -n 2 --dist load --nbmake tests notebooks

# Re-executes the notebooks and saves their outputs (commit them: reviewers read them as run).
notebooks: $(STAMP)
	cd notebooks && for nb in *.ipynb; do ../$(VENV)/bin/jupyter-execute --inplace --timeout=600 "$$nb" || exit 1; done

demo: $(STAMP)
	$(PY) -m experiments.demo --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache
