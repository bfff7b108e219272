# Gridsense: every target runs the idempotent set-up first (fast when everything is present).
SHELL := /bin/bash
CACHE := $(CURDIR)/.cache/gridsense
export GRIDSENSE_CACHE := $(CACHE)
export ORT_DYLIB_PATH ?= $(CACHE)/onnxruntime/libonnxruntime.so.1.32.0

.PHONY: setup demo test lint bench fuzz-build package

setup:
	@scripts/setup

## Build and start what exists, on embedded defaults.
demo: setup
	@scripts/demo

## Everything CI checks: formatting, lints, the dependency direction, all tests.
test: setup lint
	cargo test --workspace --locked
	RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --locked --quiet

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

## Benchmarks with their anchors, printed as tables (release build).
bench: setup
	cargo bench --workspace --locked

## The cargo-fuzz targets (nightly toolchain; installs cargo-fuzz once).
fuzz-build: setup
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && cargo +nightly fuzz build
