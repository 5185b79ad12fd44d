# Quick start: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: test demo bench install clean prometheus

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

install: $(VENV)/.installed-test

# The observability tests run promtool and a Prometheus server: Debian's prometheus package.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "Installing Debian's prometheus package (promtool and the server) for the observability tests"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus || { \
	    $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }; }

test: $(VENV)/.installed-test prometheus
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
