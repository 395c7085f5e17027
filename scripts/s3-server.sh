#!/bin/bash
# Starts a real S3-compatible server (moto, which implements versioning and Object Lock) on
# 127.0.0.1 for the tests, installing it into a virtual environment outside the checkout once.
# Usage: scripts/s3-server.sh PORT   — prints "http://127.0.0.1:PORT" when the server answers.
set -euo pipefail
PORT=${1:-9000}
VENV=${CAIRN_MOTO_VENV:-/var/tmp/cairn-moto-venv}
PYTHON=$(command -v python3.11 || command -v python3)
if [ ! -x "$VENV/bin/moto_server" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q 'moto[server]==5.2.5'
fi
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" > "/tmp/cairn-moto-$PORT.log" 2>&1 &
echo $! > "/tmp/cairn-moto-$PORT.pid"
for _ in $(seq 1 200); do
  if curl -sf -o /dev/null "http://127.0.0.1:$PORT/moto-api/"; then
    echo "http://127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.1
done
echo "the S3 test server did not start; see /tmp/cairn-moto-$PORT.log" >&2
exit 1
