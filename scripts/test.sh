#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, data-driven, property tests,
# simulator scenarios, the purity check on the brain's dependencies). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# The real runtimes the driver tests use (runc, dockerd, busybox-static, docker-registry):
# installed when missing, dockerd started when it is not running. The driver tests fail, never
# skip, when a runtime is missing.
bash scripts/install-deps.sh
export SHOAL_REQUIRE_RUNTIMES=1
# Property tests and fuzz targets draw from one fixed seed, so a CI run is reproducible and a
# result does not depend on the draw; scripts/fuzz.sh runs the fuzz targets with fresh seeds.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-1733270400}"
# One build of every test binary: incremental state only fills the disk here (tens of GB).
export CARGO_INCREMENTAL=0

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests; run them first so nextest's summary closes the log
    cargo test --workspace --locked --doc
    # The shim as it ships (static) for tests/static_shim.rs; cargo's own stays dynamic.
    bash scripts/static-shim.sh debug
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo build --workspace --locked
    bash scripts/static-shim.sh debug
    cargo test --workspace --locked --no-fail-fast
fi
