# Every target sets up what it needs: a virtual environment in .venv, the data in data/.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EVAL_STAMP := $(VENV)/.eval-stamp
TEST_STAMP := $(VENV)/.test-stamp

TRAIN_ARGS ?=
SCORE_ARGS ?=
PYTEST_ARGS ?=

EVAL_ARGS ?=

.PHONY: help venv data train score verify evaluate report test test-fast bench clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[train,report,test]'
	touch $(STAMP)

$(EVAL_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[train,report,test,eval]'
	touch $(EVAL_STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[train,report,test,spark]'
	touch $(TEST_STAMP)

venv: $(STAMP)  ## create .venv and install the project (torch pinned to 2.13.0, CPU)

data: $(STAMP)  ## fetch MovieLens 100K into data/ (verified by checksum; cached)
	$(PY) -m export.data.fetch

train: data  ## train and export the three models into artifacts/latest (reused when unchanged)
	$(PY) -m export $(TRAIN_ARGS)

score: train  ## score every user-item pair and publish Parquet tables under output/latest
	$(PY) -m scoring $(SCORE_ARGS)

verify: $(STAMP)  ## compare every row of output/latest with the torch models
	$(PY) -m evaluation.verify

evaluate: data $(EVAL_STAMP)  ## 5-fold CV + temporal hold-out vs baselines, Surprise and top-N peers
	$(PY) -m evaluation $(EVAL_ARGS)

report: $(STAMP)  ## (re)write output/latest/report.html, with make evaluate's results if present
	$(PY) -m scoring.report

BENCH_ARGS ?=

bench: data  ## benchmark: stage times, pairs/s, peak RSS, vs torch eager and the GEMM floor
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

TEST_WORKERS ?= 2

test: data $(TEST_STAMP)  ## run the whole test suite in TEST_WORKERS processes (installs pyspark; needs Java 17)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the quick subset for the edit-test loop (no training of the real models)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:  ## remove trained bundles, published runs and caches (keeps .venv and data)
	rm -rf artifacts output bench .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean  ## also remove the virtual environment and the data cache
	rm -rf $(VENV) data
