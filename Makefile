# Quick start: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test demo bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

install: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The market-crash scenario on an embedded broker, through the processor; ARGS adds demo flags,
# e.g. make demo ARGS="--accounts 20000 --seed 7" (see adl-stream demo --help).
demo: $(VENV)/.installed-demo
	$(BIN)/adl-stream demo $(ARGS)

# Benchmarks (not part of the tests): figures as tables and JSON (bench-results.json), next to
# their targets. ARGS narrows them, e.g. make bench ARGS="--positions 10000 --book 100000".
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
