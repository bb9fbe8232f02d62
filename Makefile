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

.PHONY: all venv proto up down logs demo test test-unit lint check bench fuzz lock clean

all: proto

# requirements.lock pins (with hashes) the runtime, the local stack and the dev tools; a deployed service
# installs requirements-runtime.lock alone. `make lock` re-resolves both after pyproject.toml's dependencies
# change, keeping every pin already there (uv is not in the venv: pip install uv somewhere else, or UV=path).
$(STAMP): requirements.lock
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q --require-hashes -r requirements.lock
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

# The tests that start no server (no integration marker): seconds.
test-unit: proto
	$(PYTHON) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: proto
	$(BIN)/ruff check .
	$(BIN)/mypy

# What CI runs (.ci/run): lint, then the whole suite.
check: lint test

bench: proto
	$(PYTHON) -m bench $(BENCH_ARGS)

# Property-based fuzzing of every feed parser: TT_FUZZ_FRAMES malformed frames (100,000 unless set), 0 crashes,
# each one counted; the figures are printed and written to build/fuzz-report.json. `make test` runs 2,000.
fuzz: proto
	TT_FUZZ_FRAMES=$${TT_FUZZ_FRAMES:-100000} TT_FUZZ_REPORT=build/fuzz-report.json \
		$(PYTHON) -m pytest tests/ingest/test_fuzz.py -q -s -k feed_fuzz --timeout=0

UV ?= uv
LOCK_ARGS := --generate-hashes --python-version 3.11 --custom-compile-command "make lock"

lock:
	$(UV) pip compile pyproject.toml --extra local --extra mcp --extra dev $(LOCK_ARGS) -o requirements.lock
	cp requirements.lock requirements-runtime.lock
	$(UV) pip compile pyproject.toml $(LOCK_ARGS) -o requirements-runtime.lock

clean: down
	rm -rf build tradingtools .pytest_cache .mypy_cache .ruff_cache
