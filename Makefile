# The two commands the README opens with: `make demo` and `make test`.
# Both work on a fresh machine with Python >= 3.11 and git; they create .venv here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint typecheck unit cluster bench bench-probot mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict --explicit-package-bases ghbot actors examples tests

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not cluster" -q

cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster -q

# Everything CI runs: lint, types, and the whole test suite (cluster tests included),
# the tests that start Ray and the others in two lanes at once (scripts/test.sh).
test: lint typecheck
	scripts/test.sh

# The benchmarks' quick configurations, one after another (a few minutes; some start
# a local Ray). `$(BIN)/python benchmarks/run_all.py --help` for the full ones.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The Probot bot bench_e2e.py compares ghbot with (needs Node.js >= 20.18 and npm);
# without it bench_e2e.py skips that row and says why.
bench-probot:
	npm ci --prefix benchmarks/probot --no-audit --no-fund

# Mutation testing of the modules pyproject.toml's [tool.mutmut] names (by hand, not in
# CI: about 45 minutes on 2 cores from scratch); mutmut works in mutants/ and keeps its
# results there. mutmut is pinned: its settings' names change between versions.
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet "mutmut==3.8.1"
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
