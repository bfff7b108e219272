# Gridsense: every target runs the idempotent set-up first (fast when everything is present).
SHELL := /bin/bash
CACHE := $(CURDIR)/.cache/gridsense
export GRIDSENSE_CACHE := $(CACHE)
export ORT_DYLIB_PATH ?= $(CACHE)/onnxruntime/libonnxruntime.so.1.32.0

.PHONY: setup demo test lint bench fuzz-build fuzz soak package

setup:
	@scripts/setup

## The whole product on this machine: broker, hub, an enrolled box with two test cameras and
## simulated sensors; prints the API URL and a sign-in token; Ctrl-C stops everything.
## `scripts/demo --ci` stops by itself once a camera case and a sensor case reached the hub.
demo: setup
	@scripts/demo

## .deb files of edge-agent and hub in target/debian/ (release build; see scripts/package).
package: setup
	@scripts/package

## Everything CI checks: formatting, lints, the dependency direction, all tests.
test: setup lint
	cargo test --workspace --locked
	# the hub's suite again, on PostgreSQL (a private cluster beside it; see tests/src/bin/with-postgres.rs)
	cargo run --locked --quiet -p e2e --bin with-postgres -- cargo test --locked --quiet -p hub --lib --test it
	RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
	# the fuzz targets (outside the workspace) must keep compiling as the code they fuzz changes
	cargo check --manifest-path fuzz/Cargo.toml --bins --locked --quiet

## Benchmarks with their anchors, printed as tables (release build).
bench: setup
	cargo bench --workspace --locked

## The cargo-fuzz targets (nightly toolchain; installs cargo-fuzz once).
fuzz-build: setup
	scripts/fuzz --build-only

## Every fuzz target for FUZZ_SECS seconds (default 60), two at a time; prints a table.
FUZZ_SECS ?= 60
fuzz: setup
	scripts/fuzz --seconds $(FUZZ_SECS) --jobs 2

## The 30-minute soak under kills and link faults, then its report (SOAK_SECS, SOAK_SEED,
## SOAK_REPORT=FILE; see tests/tests/soak.rs). Not part of `make test`.
soak: setup
	cargo test --locked -p e2e --test soak -- --ignored --nocapture
