# Quick start: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test demo install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

demo: install
	@echo "adl-stream demo: not yet — the crash scenario lands with the demo issue."
	@echo "Meanwhile: $(BIN)/adl-stream run --help"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
