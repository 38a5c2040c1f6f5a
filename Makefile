# Two commands do everything on a fresh machine (Python 3.11 + pip):
#   make run    create .venv, install, and run the DVC pipeline (dvc repro)
#   make test   create .venv, install, and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# Touched after a successful install; newer than pyproject.toml and the lock means nothing to reinstall.
INSTALLED := $(VENV)/.installed
# Every package's version, resolved from pyproject.toml by `make lock` (uv); installs take exactly these.
LOCK := requirements.lock

# Offline data mirror: $PIPELINE_DATA_MIRROR when set, else the team's ../shared/data beside
# the checkout when it exists, else none (public URLs).
SHARED_MIRROR := $(abspath ../shared/data)
PIPELINE_DATA_MIRROR ?= $(if $(wildcard $(SHARED_MIRROR)/.),$(SHARED_MIRROR),)
export PIPELINE_DATA_MIRROR
# DVC stage commands call `python`: make it the project's.
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=
# make test runs the suite in this many processes (pytest-xdist), each with one torch thread: tests
# are dealt out one by one, except a module marked xdist_group (module-scoped fixtures), which
# stays in one process.
TEST_WORKERS ?= 2

.PHONY: help install lock lint run test test-fast bench ui dashboard user-data clean

help:
	@echo "make run        install into $(VENV) and run the pipeline (dvc repro)"
	@echo "make test       install into $(VENV) and run every test"
	@echo "make test-fast  the tests not marked slow"
	@echo "make lint       ruff (lint and format) and mypy, as CI runs them"
	@echo "make lock       re-resolve $(LOCK) from pyproject.toml (after changing a dependency)"
	@echo "make bench      the benchmark suite (about 20–22 min on 2 cores): bench/results/ and the README's results table"
	@echo "make ui         the MLflow UI on the project's tracking store (runs trained with logger=mlflow)"
	@echo "make dashboard  optuna-dashboard on the searches' study storage (optuna.db; OPTUNA_STORAGE=...)"
	@echo "make screenshots  PNGs of the MLflow UI (runs table, charts, a run's artifacts) into docs/images"
	@echo "data mirror: $(or $(PIPELINE_DATA_MIRROR),none (public URLs))"

$(INSTALLED): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# Hydra's Optuna plugin (optuna<3), from before the project's own sweeper: it would register a second
	@# hydra/sweeper=optuna (pip keeps packages a project no longer requires)
	@$(BIN)/python -m pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	@touch $@

install: $(INSTALLED)

# The lock covers every platform and Python >= 3.10 (environment markers pick the wheels). pip reads it
# as constraints, so pyproject.toml's torch===2.13.0 still refuses a local 2.13.0+cpu build (README).
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==0.13.9"  # the resolver's version decides the lock: pinned
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.10 --quiet \
	  --custom-compile-command "make lock" -o $(LOCK)

lint: install
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs
	$(BIN)/mypy

# data/ is tracked by data.dvc. A fresh clone without a DVC remote has no copy of it: when
# data.dvc records the empty folder, recreate it and let DVC record it in its cache.
user-data: install
	@if [ ! -e data ]; then \
	  if grep -q 'nfiles: 0' data.dvc; then mkdir data && $(BIN)/dvc commit --quiet --force data.dvc; \
	  else echo "data/ is missing: run 'dvc pull data.dvc' to get your files from your DVC remote" >&2; exit 1; fi; \
	fi

run: install user-data
	@echo "data mirror: $(or $(PIPELINE_DATA_MIRROR),none (public URLs))"
	$(BIN)/dvc repro

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The benchmarks (bench/README.md): pipeline vs a plain loop, time to accuracy, fixed costs, scale,
# GPU when present. BENCH_ARGS e.g. "--only overhead --repeats 1".
BENCH_ARGS ?=
bench: install
	@echo "data mirror: $(or $(PIPELINE_DATA_MIRROR),none (public URLs))"
	$(BIN)/python -m bench $(BENCH_ARGS)

# optuna-dashboard on the presets' study storage (or OPTUNA_STORAGE=...), on this machine only.
OPTUNA_STORAGE ?= sqlite:///optuna.db
dashboard: install
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port $(or $(PORT),8080) $(OPTUNA_STORAGE)

# The MLflow UI on the default store of conf/logger/mlflow.yaml (or $$MLFLOW_TRACKING_URI when set).
MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
ui: install
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port $(or $(PORT),5000)

# Screenshots of the MLflow UI for the docs, in headless Chromium (Debian's; installed with apt
# when missing and we are root): the newest sweep's runs table and charts, one run's artifacts.
.PHONY: screenshots
screenshots: install
	@test -x "$${CHROMIUM:-/usr/bin/chromium}" || command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium (apt-get install chromium)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else echo "Chromium is missing: sudo apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)" >&2; exit 1; fi; }
	$(BIN)/python docs/screenshots.py --tracking-uri $(MLFLOW_TRACKING_URI) --out docs/images

clean:
	rm -rf datasets .pytest_cache
