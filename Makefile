# Every target builds what it needs from nothing: a `.venv` made with the system Python and
# pip, then the package (and, for test/check/format, its dev extra). A stamp file per install
# keeps repeated runs quick; editing pyproject.toml makes the next run install again.
#
#   make demo        run the demo (`python -m bastion demo`)
#   make test        the whole pytest suite, on SQLite and on a throw-away PostgreSQL
#                    (PYTEST_ARGS="-k foo -x" to narrow; BASTION_TEST_SKIP_PG=1 skips PostgreSQL)
#   make check       ruff, ruff format --check, mypy --strict, import-linter (all run, then fail)
#   make format      ruff format + ruff check --fix
#   make bench       benchmarks/run.sh (its own .venv-bench); make bench-full for the full suite
#   make clean       remove the virtualenvs, caches and build output

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
# Only the directories that exist, so a tree without benchmarks/ still checks.
LINT_PATHS := $(wildcard src tests benchmarks examples)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help demo test check format bench bench-full clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(BASE_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/python -m bastion demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Runs every checker even when an earlier one fails, then fails if any did.
check: $(DEV_STAMP)
	@status=0; \
	echo '== ruff check'; $(BIN)/ruff check $(LINT_PATHS) || status=1; \
	echo '== ruff format --check'; $(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	echo '== mypy'; $(BIN)/mypy || status=1; \
	echo '== lint-imports'; $(BIN)/lint-imports || status=1; \
	if [ $$status -ne 0 ]; then echo 'make check: FAILED'; else echo 'make check: OK'; fi; \
	exit $$status

format: $(DEV_STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

bench:
	bash benchmarks/run.sh

bench-full:
	bash benchmarks/run.sh --full

clean:
	rm -rf $(VENV) .venv-bench build dist .pytest_cache .mypy_cache .ruff_cache \
		.hypothesis .import_linter_cache
	rm -f ./*.sqlite
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -not -path './.git/*' -exec rm -rf {} +
