# Firebreak: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/cache/firebreak/target
# Where scripts/setup.sh installs openapi-spec-validator.
export OPENAPI_VENV ?= /var/cache/firebreak/openapi-venv

.PHONY: setup run test lint ci bench bench-compare package openapi

## Install missing system packages (quick when everything is present).
setup:
	@scripts/setup.sh

## Build and run the live demo: an HLS stream in which a known clip appears, monitored by `firebreak run`.
run: setup
	cargo build --release -p firebreak
	scripts/demo.sh

## Run the whole test suite (ends with one summary line over every test binary).
test: setup
	@mkdir -p $(CARGO_TARGET_DIR)
	@set -o pipefail; cargo test --workspace --no-fail-fast 2>&1 | tee $(CARGO_TARGET_DIR)/test.log
	@awk '/^test result:/ { p += $$4; f += $$6; i += $$8 } \
	  END { printf "workspace: %d passed, %d failed, %d skipped\n", p, f, i; exit (p == 0 || f > 0) }' \
	  $(CARGO_TARGET_DIR)/test.log

## Formatting, lints, the dependency rules, cargo-deny, the OpenAPI document's validity
## and deploy/'s manifests (schemas, mounted configs), as CI runs them.
lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/check-deps.sh
	cargo deny check licenses bans sources
	$(OPENAPI_VENV)/bin/python -m openapi_spec_validator crates/firebreak/openapi.json
	scripts/check-deploy.sh

ci: lint test

## Regenerate the HTTP API's OpenAPI document from the handlers (a test fails when the
## committed crates/firebreak/openapi.json differs from it).
openapi:
	cargo run -q -p firebreak -- openapi > crates/firebreak/openapi.json

## Criterion benchmarks.
bench: setup
	cargo bench -p firebreak-benches

## Side-by-side speed against Meta's reference (PyPI pdqhash and vpdq).
bench-compare: setup
	benches/compare_reference.sh

## The release binary without debug info in dist/ (debug info beside it).
package: setup
	scripts/package.sh
