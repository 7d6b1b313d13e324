# Ensemble — the vocabulary: make run | test | test-quick | lint | dev | fuzz | fuzz-http | bench | ui
# Everything installs into .venv (override with VENV=...); nothing global but apt packages in .ci/run.
# Each target first checks the tools it needs (scripts/prerequisites.sh) and names what is missing.

VENV       ?= .venv
PYTHON     ?= python3
BIN        := $(VENV)/bin
CONFIG     ?= config/ensemble.yaml
PYTEST_ARGS ?=
NATIVE_SRC := $(wildcard rust/src/*.rs rust/src/*/*.rs) rust/Cargo.toml pyproject.toml
BUILT      := $(VENV)/.ensemble-built
# The maturin the dev extra pins (pyproject.toml is the one place dev tool versions are written).
MATURIN    := $(shell sed -n 's/^ *"\(maturin==[0-9.]*\)",*$$/\1/p' pyproject.toml)
CHECK       = @PYTHON=$(PYTHON) scripts/prerequisites.sh "make $(or $(MAKECMDGOALS),$@)"

.PHONY: ui ui-check ui-screenshots soak bench-rss bench-h2 dev run test test-quick test-rust test-python fuzz-http test-python-h2 test-clients test-clients-ts test-clients-go lint lint-clients fmt fuzz bench clean check-test check-lint

$(BIN)/maturin:
	$(CHECK) python rust
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(MATURIN)"

# Builds the Rust extension (release) and installs Ensemble editable with its dev dependencies.
# PIP_QUIET: maturin installs the dependencies with pip, which would list every package it fetched.
$(BUILT): $(BIN)/maturin $(NATIVE_SRC)
	$(CHECK) rust
	@echo "Building the Rust extension and installing into $(VENV) (a few minutes the first time)..."
	@VIRTUAL_ENV=$(abspath $(VENV)) PIP_QUIET=1 $(BIN)/maturin develop --release --extras dev -q
	@touch $@

dev: $(BUILT)

run: $(BUILT)
	$(BIN)/ensemble serve --config $(CONFIG)

# check-test first: a missing Go or Node is named at once, not after the Rust and Python suites.
test: check-test test-rust test-python test-python-h2 test-clients

check-test:
	$(CHECK) python rust node go redis curl chromium

# The unit layer only: every test not marked `integration` (those start subprocesses: servers,
# redis-server, moto, the CLI). Pass more to pytest with PYTEST_ARGS="-k config -x".
test-quick: $(BUILT)
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

test-rust:
	$(CHECK) rust
	cd rust && cargo test -q

test-python: $(BUILT)
	$(CHECK) redis curl chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The streaming and upstream-facing integration tests once more with every provider on HTTP/2
# (h2c to the fake upstream; docs/upstream.md). The whole suite passes so too, in ~3x the time.
H2_TESTS ?= tests/streaming tests/integration/test_formats.py tests/integration/test_failover_errors.py tests/integration/test_responses_api.py
test-python-h2: $(BUILT)
	ENSEMBLE_UPSTREAM_HTTP=2 $(BIN)/python -m pytest $(H2_TESTS) $(PYTEST_ARGS)

# The TypeScript and Go clients' suites, each against its own real gateway + fake upstream
# (clients/with_gateway.py starts them on free ports and exports ENSEMBLE_URL / ENSEMBLE_API_KEY).
# The Python client's tests are part of test-python (tests/client/).
test-clients: test-clients-ts test-clients-go

TS_DEPS := clients/typescript/node_modules/.package-lock.json

$(TS_DEPS): clients/typescript/package-lock.json
	$(CHECK) node
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error

test-clients-ts: $(BUILT) $(TS_DEPS)
	$(BIN)/python clients/with_gateway.py -- sh -c 'cd clients/typescript && npm test --silent'

test-clients-go: $(BUILT)
	$(CHECK) go
	$(BIN)/python clients/with_gateway.py -- sh -c 'cd clients/go && go test -count=1 ./...'

lint-clients: $(TS_DEPS)
	$(CHECK) node go-all
	cd clients/typescript && npx --no-install tsc -p tsconfig.test.json --noEmit
	cd clients/go && test -z "$$(gofmt -l .)" && go vet ./...
	cd benches/soak/rig && test -z "$$(gofmt -l .)" && go vet ./...

# The admin dashboard (ui/, Preact + Vite) is built into python/ensemble/ui/ and committed, so the
# gateway and its wheel need no Node. `make ui` rebuilds it; `make lint` checks the committed build
# is what the sources give (ui-check) and type-checks them.
UI_DEPS := ui/node_modules/.package-lock.json
UI_BUILD := python/ensemble/ui

$(UI_DEPS): ui/package-lock.json
	$(CHECK) node
	cd ui && npm ci --no-audit --no-fund --loglevel=error

ui: $(UI_DEPS)
	cd ui && npx --no-install vite build --logLevel warn

ui-check: $(UI_DEPS)
	cd ui && npx --no-install tsc --noEmit
	rm -rf "$(abspath ui/.build-check)"
	cd ui && npx --no-install vite build --logLevel warn --outDir "$(abspath ui/.build-check)" --emptyOutDir
	diff -r "$(abspath ui/.build-check)" $(UI_BUILD) >/dev/null || { \
	  diff -rq "$(abspath ui/.build-check)" $(UI_BUILD); rm -rf "$(abspath ui/.build-check)"; \
	  echo "$(UI_BUILD) is not the build of ui/: run make ui and commit the result"; exit 1; }
	rm -rf "$(abspath ui/.build-check)"

# Screenshots of every dashboard page into docs/ui/ (a real gateway with traffic, headless Chromium).
ui-screenshots: $(BUILT)
	$(BIN)/python ui/screenshots.py docs/ui

lint: check-lint $(BUILT) lint-clients ui-check
	$(BIN)/ruff check python tests benches ui
	$(BIN)/ruff format --check python tests benches ui
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest ensemble._native
	$(BIN)/python -m ensemble.tools.deps > /dev/null
	cd rust && cargo fmt --check
	cd rust && cargo clippy -q --all-targets -- -D warnings
	cd rust && cargo clippy -q --features python -- -D warnings

check-lint:
	$(CHECK) python rust rust-lint node go-all

fmt: $(BUILT)
	$(BIN)/ruff format python tests benches ui
	$(BIN)/ruff check --fix python tests benches ui
	cd rust && cargo fmt

# Soak: 10,000 slow streams through one worker (needs Go for the load rig). Options: SOAK_ARGS="--http 4000 --ws 1000"
soak: $(BUILT)
	$(CHECK) go-all
	$(BIN)/python benches/soak/soak.py $(SOAK_ARGS)

# Load test (needs wrk; pins processes with taskset). Options: BENCH_ARGS="--duration 10 --workers 1,2 --quick"
bench: $(BUILT)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python benches/run.py $(BENCH_ARGS)
	@$(MAKE) --no-print-directory bench-h2

# The HTTP/2 pool's targets: 2,000 streams to one host over <= 100 connections, CPU per event against
# HTTP/1.1 in the same run (client pinned to one core, as a bench worker is), cancel-to-RST delay.
# Options: BENCH_H2_ARGS="--rounds 3 --streams 2000"
bench-h2: $(BUILT)
	$(BIN)/python benches/upstream/bench_streams.py --pin $(BENCH_H2_ARGS)

# Memory soak: RSS of one worker over BENCH_RSS_REQUESTS (default 1M) JSON requests.
bench-rss: $(BUILT)
	@command -v wrk >/dev/null || { echo "make bench-rss needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python benches/run.py --rss-requests $${BENCH_RSS_REQUESTS:-1000000}

fuzz:
	rust/fuzz/run.sh $${FUZZ_SECONDS:-60}

# Thousands of hostile HTTP requests over every route (docs/security.md); fails on a 5xx, a hang,
# a worker restart or a crash, and prints its counts.
fuzz-http: $(BUILT)
	$(BIN)/python -m pytest -q -s tests/integration/test_fuzz.py $(PYTEST_ARGS)

clean:
	rm -rf clients/typescript/node_modules clients/typescript/dist clients/typescript/build-test ui/node_modules
	rm -rf $(VENV) rust/target python/ensemble/_native*.so .pytest_cache .mypy_cache .ruff_cache
