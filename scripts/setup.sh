#!/usr/bin/env bash
# Installs what building and testing Cairn needs on a fresh Debian machine (idempotent):
# libclang for the RocksDB bindings; setpriv, curl and a Prometheus Pushgateway for the tests. Run as root (CI and the dev machines are).
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v setpriv >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi
