# Trading Tools v2. `make demo` runs the stack with the simulator; `make test` runs the tests.
# Both create the virtual environment, install the pinned dependencies and generate code first.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
PROTO_STAMP := build/.proto-stamp
PROTO_FILES := $(shell find protos -name '*.proto')

export MALLOC_TRIM_THRESHOLD_ ?= 268435456

.PHONY: all venv proto up down logs demo test lint bench clean

all: proto

$(STAMP): requirements.lock
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.lock
	touch $(STAMP)

venv: $(STAMP)

$(PROTO_STAMP): $(STAMP) $(PROTO_FILES) tools/genproto.py tools/openapi.py tools/rest_schema.py
	$(PYTHON) -m tools.genproto
	touch $(PROTO_STAMP)

proto: $(PROTO_STAMP)

up: proto
	$(PYTHON) -m tools.stack up

down:
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m tools.stack down; fi

logs: proto
	$(PYTHON) -m tools.stack logs

demo: proto
	$(PYTHON) -m tools.demo

test: proto
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: proto
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: proto
	$(PYTHON) -m bench $(BENCH_ARGS)

clean: down
	rm -rf build tradingtools .pytest_cache .mypy_cache .ruff_cache
