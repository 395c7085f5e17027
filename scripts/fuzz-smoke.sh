#!/usr/bin/env bash
# A short smoke run of every fuzz target, for CI: builds the targets as plain (uninstrumented)
# libFuzzer binaries with the stable toolchain into the shared target directory, reusing the
# main build's dependencies, then replays each checked-in corpus (seeds and the inputs kept from
# the long instrumented runs, see fuzz/README.md) and tries random mutations of it for a few
# seconds. Any panic fails the run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
SECONDS_PER_TARGET=${FUZZ_SMOKE_SECONDS:-15}
cargo build --release --locked --bins
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v cairn-fuzz); do
  mkdir -p "$scratch/$target" "artifacts/$target"
  "$CARGO_TARGET_DIR/release/$target" "$scratch/$target" "corpus/$target" \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" 2> "$scratch/$target.log" ||
    { tail -40 "$scratch/$target.log" >&2; echo "fuzz target $target failed" >&2; exit 1; }
  echo "fuzz smoke: $target: $(grep -c . <(ls "corpus/$target")) corpus inputs, $(grep -o 'Done [0-9]* runs' "$scratch/$target.log" || echo 'ran')"
done
