#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration tests.
# Everything builds in the release profile into one target directory, so RocksDB's C++ compiles
# once for the tests, the benchmarks and the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo test --release --workspace --locked
