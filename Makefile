# Trading Tools v2. `make demo` runs the stack with the simulator; `make test` runs the tests.
# Both create the virtual environment, install the pinned dependencies and generate code first.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed-stamp
PROTO_STAMP := build/.proto-stamp
PROTO_FILES := $(shell find protos -name '*.proto')

# glibc malloc for every process started from here: keep up to 256 MiB freed at the heap top and serve
# blocks up to 32 MiB from the heap (a 0.6 MB list page is built, framed and dropped per call). Both or
# neither: a trim threshold alone also freezes the mmap threshold at 128 KiB, and then every such block
# is mapped and faulted in again (5x the CPU per page: `python -m bench compare --only malloc`).
export MALLOC_TRIM_THRESHOLD_ ?= 268435456
export MALLOC_MMAP_THRESHOLD_ ?= 33554432

.PHONY: all venv proto up down logs demo test lint bench clean

all: proto

$(STAMP): requirements.lock
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.lock
	touch $(STAMP)

venv: $(STAMP)

$(PROTO_STAMP): $(STAMP) $(PROTO_FILES) tools/genproto.py
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
