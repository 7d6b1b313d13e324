# Ensemble — the vocabulary: make run | test | lint | dev | fuzz | bench
# Everything installs into .venv (override with VENV=...); nothing global but apt packages in .ci/run.

VENV       ?= .venv
PYTHON     ?= python3
BIN        := $(VENV)/bin
CONFIG     ?= config/ensemble.yaml
PYTEST_ARGS ?=
NATIVE_SRC := $(wildcard rust/src/*.rs) rust/Cargo.toml pyproject.toml
BUILT      := $(VENV)/.ensemble-built

.PHONY: dev run test test-rust test-python lint fmt fuzz bench clean

$(BIN)/maturin:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "maturin>=1.7,<2"

# Builds the Rust extension (release) and installs Ensemble editable with its dev dependencies.
$(BUILT): $(BIN)/maturin $(NATIVE_SRC)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --extras dev -q
	touch $@

dev: $(BUILT)

run: $(BUILT)
	$(BIN)/ensemble serve --config $(CONFIG)

test: test-rust test-python

test-rust:
	cd rust && cargo test -q

test-python: $(BUILT)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BUILT)
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest ensemble._native
	cd rust && cargo fmt --check
	cd rust && cargo clippy -q --all-targets -- -D warnings
	cd rust && cargo clippy -q --features python -- -D warnings

fmt: $(BUILT)
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches
	cd rust && cargo fmt

# Load test (needs wrk; pins processes with taskset). Options: BENCH_ARGS="--duration 10 --workers 1,2 --quick"
bench: $(BUILT)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python benches/run.py $(BENCH_ARGS)

fuzz:
	rust/fuzz/run.sh $${FUZZ_SECONDS:-60}

clean:
	rm -rf $(VENV) rust/target python/ensemble/_native*.so .pytest_cache .mypy_cache .ruff_cache
