#!/bin/bash
# Starts Azurite (Microsoft's Azure Storage emulator, blob service only) on 127.0.0.1 for the
# tests, its data in a fresh folder /tmp/cairn-azurite-PORT; scripts/setup.sh --tests installs
# it outside the checkout (CAIRN_AZURITE_DIR, else /var/tmp/cairn-azurite).
# Usage: scripts/azure-server.sh PORT   — prints "http://127.0.0.1:PORT" when the server answers
# and records its pid in /tmp/cairn-azurite-PORT.pid.
set -euo pipefail
PORT=${1:-10000}
DIR=${CAIRN_AZURITE_DIR:-/var/tmp/cairn-azurite}
BIN=$DIR/node_modules/.bin/azurite-blob
if [ ! -x "$BIN" ]; then
  echo "Azurite is not installed in $DIR: run scripts/setup.sh --tests" >&2
  exit 1
fi
DATA=/tmp/cairn-azurite-$PORT
rm -rf "$DATA"
mkdir -p "$DATA"
"$BIN" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$DATA" --silent --loose \
  --skipApiVersionCheck --disableProductStyleUrl > "/tmp/cairn-azurite-$PORT.log" 2>&1 &
echo $! > "/tmp/cairn-azurite-$PORT.pid"
for _ in $(seq 1 300); do
  # any HTTP answer (an anonymous request is refused with 4xx) means it is listening
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/devstoreaccount1?comp=list")" != 000 ]; then
    echo "http://127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.1
done
echo "Azurite did not start; see /tmp/cairn-azurite-$PORT.log" >&2
exit 1
