#!/usr/bin/env bash
# Installs what building Cairn needs on a fresh Debian machine (idempotent): libclang for the
# RocksDB bindings. With --tests, also what the tests need: setpriv and fincore (util-linux), curl, a Prometheus
# Pushgateway and promtool (the alert rules' tests), a headless Chromium (the HTML report's test), libfaketime (a clock that is
# wrong on purpose), and Azurite (Microsoft's Azure Storage emulator, from the npm registry,
# into CAIRN_AZURITE_DIR, else /var/tmp/cairn-azurite; Node.js and npm from Debian if missing).
# Run as root (CI and the dev machines are).
set -euo pipefail
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
if [ "${1:-}" = --tests ]; then
  { command -v setpriv && command -v fincore; } >/dev/null || need+=(util-linux)
  command -v curl >/dev/null || need+=(curl)
  command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v chromium >/dev/null || need+=(chromium)
  command -v faketime >/dev/null || need+=(faketime)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need[@]}" >/dev/null
fi
if [ "${1:-}" = --tests ]; then
  AZURITE_DIR=${CAIRN_AZURITE_DIR:-/var/tmp/cairn-azurite}
  # 3.35.0: the newest release that allows a Node.js before 21 (Debian 12 has 18)
  if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
    npm install -q --prefix "$AZURITE_DIR" --no-audit --no-fund azurite@3.35.0 >/dev/null
  fi
fi
