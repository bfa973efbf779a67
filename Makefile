# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create ./.venv on first use with the CPU build of torch pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fernn-installed
# MNIST for the demo: $FERNN_DATA if set, else ../shared/data when it exists (else the cache).
SHARED_DATA := $(abspath $(wildcard ../shared/data))

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	FERNN_DATA="$${FERNN_DATA:-$(SHARED_DATA)}" $(BIN)/fernn demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo .pytest_cache
