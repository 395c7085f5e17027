#!/usr/bin/env bash
# Installs what building Cairn needs on a fresh Debian machine (idempotent): libclang for the
# RocksDB bindings. With --tests, also what the tests need: setpriv, curl, a Prometheus
# Pushgateway and promtool (the alert rules' tests), a headless Chromium (the HTML report's test) and libfaketime (a clock that is
# wrong on purpose). Run as root (CI and the dev
# machines are).
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
if [ "${1:-}" = --tests ]; then
  command -v setpriv >/dev/null || need+=(util-linux)
  command -v curl >/dev/null || need+=(curl)
  command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v chromium >/dev/null || need+=(chromium)
  command -v faketime >/dev/null || need+=(faketime)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi
