#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, property and integration tests, a short
# coverage-guided smoke run of every fuzz target, then the integration tests again with every
# repository in a bucket of a real S3 server (moto, started here on 127.0.0.1 and stopped at the
# end, with scripts/fault-proxy.py in front of it for the fault tests), and last the tests of the
# store (backup_restore, copy, gc, check, bad_objects, and the random-fault trial) with
# every repository in a container of Azurite (Microsoft's Azure Storage emulator, also on
# 127.0.0.1, with its own fault proxy). The Kubernetes tests run
# against a real etcd + kube-apiserver + kube-controller-manager started here on 127.0.0.1
# (built once from Debian's source package, in parallel with the Rust build), and the metrics
# tests against Debian's Prometheus Pushgateway, also on 127.0.0.1; the alert rules are
# unit-tested with promtool.
# Everything builds in the release profile into one target directory, so RocksDB's C++ compiles
# once for the tests, the benchmarks and the binary (the instrumented fuzz targets build into
# their own and link the same RocksDB library).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cairn-target}
scripts/setup.sh --tests
scripts/kube-build.sh > /tmp/cairn-kube-build.log 2>&1 &
kube_build=$!
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
scripts/test-alerts.sh
# the fuzz workspace has its own lock file: a stale one fails here, not after the long tests
# (online: on a fresh machine the fuzz crates are not downloaded yet)
(cd fuzz && cargo metadata --locked --format-version 1 > /dev/null) ||
  { echo "fuzz/Cargo.lock is out of date (or the registry is unreachable): run 'cargo tree' in fuzz/ and commit its Cargo.lock" >&2; exit 1; }
if ! wait "$kube_build"; then
  tail -30 /tmp/cairn-kube-build.log >&2
  echo "building the test kube-apiserver failed; see /tmp/cairn-kube-build.log" >&2
  exit 1
fi
S3_PORT=${CAIRN_TEST_S3_PORT:-19000}
KUBE_PORT=${CAIRN_TEST_KUBE_PORT:-16443}
endpoint=$(scripts/s3-server.sh "$S3_PORT")
# the fault-injecting proxy in front of it (tests/faults.rs sets each bucket's faults)
FAULT_PORT=${CAIRN_TEST_FAULT_PROXY_PORT:-19002}
python3 scripts/fault-proxy.py "$FAULT_PORT" "$endpoint" > /tmp/cairn-fault-proxy.log 2>&1 &
echo $! > /tmp/cairn-fault-proxy.pid
export CAIRN_TEST_FAULT_PROXY=http://127.0.0.1:$FAULT_PORT
for _ in $(seq 1 100); do grep -q http /tmp/cairn-fault-proxy.log && break; sleep 0.1; done
PUSH_PORT=${CAIRN_TEST_PUSHGATEWAY_PORT:-19091}
prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSH_PORT" > /tmp/cairn-pushgateway.log 2>&1 &
echo $! > /tmp/cairn-pushgateway.pid
AZURE_PORT=${CAIRN_TEST_AZURE_PORT:-19010}
azure_endpoint=$(scripts/azure-server.sh "$AZURE_PORT")
AZURE_FAULT_PORT=${CAIRN_TEST_AZURE_FAULT_PROXY_PORT:-19012}
python3 scripts/fault-proxy.py "$AZURE_FAULT_PORT" "$azure_endpoint" > /tmp/cairn-azure-fault-proxy.log 2>&1 &
echo $! > /tmp/cairn-azure-fault-proxy.pid
for _ in $(seq 1 100); do grep -q http /tmp/cairn-azure-fault-proxy.log && break; sleep 0.1; done
trap 'kill "$(cat /tmp/cairn-moto-'"$S3_PORT"'.pid)" "$(cat /tmp/cairn-fault-proxy.pid)" "$(cat /tmp/cairn-azurite-'"$AZURE_PORT"'.pid)" "$(cat /tmp/cairn-azure-fault-proxy.pid)" "$(cat /tmp/cairn-pushgateway.pid)" $(cat /tmp/cairn-kube-'"$KUBE_PORT"'/*.pid) 2>/dev/null || true' EXIT
export CAIRN_TEST_PUSHGATEWAY=http://127.0.0.1:$PUSH_PORT
for _ in $(seq 1 100); do curl -sf -o /dev/null "$CAIRN_TEST_PUSHGATEWAY/-/ready" && break; sleep 0.1; done
export CAIRN_TEST_KUBECONFIG
CAIRN_TEST_KUBECONFIG=$(scripts/kube-server.sh "$KUBE_PORT")
export AWS_ENDPOINT_URL=$endpoint AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=cairn-test AWS_SECRET_ACCESS_KEY=cairn-test
echo "== all tests, repositories in folders (S3-only tests use $endpoint)"
cargo test --release --workspace --locked
echo "== fuzz targets: a short smoke run of each"
scripts/fuzz-smoke.sh
echo "== integration tests again, every repository in an S3 bucket at $endpoint"
# the same package selection as above, so that the same test binaries run again (no rebuild)
CAIRN_TEST_S3=1 cargo test --release --workspace --locked
echo "== the store's tests again, every repository in an Azure container at $azure_endpoint (Azurite)"
# the tests that exercise the store (the others do not depend on where objects live); the same
# package selection again, so no rebuild; S3 stays reachable for the copies between the two
export CAIRN_TEST_AZURE=1 AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=$azure_endpoint \
  CAIRN_TEST_FAULT_PROXY=http://127.0.0.1:$AZURE_FAULT_PORT
cargo test --release --workspace --locked --test backup_restore --test copy --test gc \
  --test check --test bad_objects
cargo test --release --workspace --locked --test faults -- every_command_survives_a_faulty_store
