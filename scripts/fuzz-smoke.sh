#!/usr/bin/env bash
# A short smoke run of every fuzz target, for CI. Builds the targets with libFuzzer's coverage
# instrumentation (SanitizerCoverage, through stable `-C` codegen flags; see fuzz/README.md) into
# a target directory of their own, linking the RocksDB library the main build already compiled,
# then replays each checked-in corpus (seeds and the inputs kept from the long runs) and mutates
# it under coverage feedback for a few seconds. Fails on any panic (the input is left in
# fuzz/artifacts/<target>/), and on a run that shows no coverage feedback or executes nothing,
# since such a run proves little.
#
# Usage: scripts/fuzz-smoke.sh [target…]   (all targets by default)
#        scripts/fuzz-smoke.sh --seeds      (rewrites the generated seeds, fuzz/examples/seeds.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
FUZZ_TARGET_DIR=${CAIRN_FUZZ_TARGET_DIR:-/var/tmp/cairn-fuzz-target}
SECONDS_PER_TARGET=${FUZZ_SMOKE_SECONDS:-15}
TRIPLE=x86_64-unknown-linux-gnu

# RocksDB's C++ takes half an hour to compile: reuse the static library of the main build.
find_rocksdb() {
  find "$MAIN_TARGET_DIR/release/build" -path '*/librocksdb-sys-*/out/librocksdb.a' \
    -printf '%T@ %h\n' 2> /dev/null | sort -rn | sed -n '1s/^[^ ]* //p'
}
rocksdb_dir=$(find_rocksdb)
if [ -z "$rocksdb_dir" ]; then
  echo "fuzz smoke: no librocksdb.a under $MAIN_TARGET_DIR; building the engine first" >&2
  CARGO_TARGET_DIR=$MAIN_TARGET_DIR cargo build --release --locked -p cairn-engine
  rocksdb_dir=$(find_rocksdb)
  [ -n "$rocksdb_dir" ] || { echo "fuzz smoke: still no librocksdb.a in $MAIN_TARGET_DIR" >&2; exit 1; }
fi

# The flags cargo-fuzz passes, minus the nightly-only sanitizer ones. With an explicit --target,
# RUSTFLAGS reach only the target's crates: build scripts and proc-macros stay uninstrumented.
cd fuzz
export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR ROCKSDB_LIB_DIR=$rocksdb_dir ROCKSDB_STATIC=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth
  --cfg fuzzing"
build_start=$SECONDS
cargo build --release --locked --bins --target "$TRIPLE"
echo "fuzz smoke: instrumented build took $((SECONDS - build_start)) s"
if [ "${1:-}" = --seeds ]; then
  exec cargo run --release --locked --target "$TRIPLE" --example seeds
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch # scratch files of the targets (the index_segment target's cache)
fail() {
  tail -40 "$scratch/$target.log" >&2
  echo "fuzz smoke: $target: $1 (log above)" >&2
  exit 1
}
targets=("$@")
[ $# -gt 0 ] || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v -x -e cairn-fuzz -e seeds)
for target in "${targets[@]}"; do
  seeds=0
  [ ! -d "corpus/$target" ] || seeds=$(find "corpus/$target" -type f | wc -l)
  [ "$seeds" -gt 0 ] || { echo "fuzz smoke: $target has no inputs in fuzz/corpus/$target to mutate from" >&2; exit 1; }
  mkdir -p "$scratch/$target" "artifacts/$target"
  "$CARGO_TARGET_DIR/$TRIPLE/release/$target" "$scratch/$target" "corpus/$target" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" > "$scratch/$target.log" 2>&1 || fail "failed"
  # Proof of coverage feedback: instrumented counters, a replayed corpus that covers code, and
  # mutations executed under feedback.
  counters=$(sed -n 's/^INFO: Loaded [0-9]* modules *(\([0-9]*\) inline 8-bit counters).*/\1/p' "$scratch/$target.log" | head -1)
  [ "${counters:-0}" -gt 0 ] || fail "not instrumented for coverage (no 8-bit counters loaded)"
  ! grep -q -e 'no interesting inputs' -e 'A corpus is not provided' "$scratch/$target.log" ||
    fail "libFuzzer found nothing to mutate from"
  inited=$(grep -m1 -E '^#[0-9]+[[:space:]]+INITED ' "$scratch/$target.log" || true)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE ' "$scratch/$target.log" | tail -1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$done_line")
  [ "${cov:-0}" -gt 0 ] || fail "no coverage at the end of the run"
  [ "${runs:-0}" -gt "$seeds" ] || fail "executed ${runs:-no} inputs, no more than its $seeds seeds"
  echo "fuzz smoke: $target: $seeds corpus inputs ($(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<< "$inited") kept), $runs runs" \
    "($(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$target.log")/s)," \
    "cov $(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 ft \2/p' <<< "$inited") at start," \
    "cov $cov ft $(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$done_line") at the end" \
    "($(sed -n 's/^stat::new_units_added: *//p' "$scratch/$target.log") new inputs) of $counters counters"
done
