#!/usr/bin/env bash
# permessage-deflate against real clients (tests/clients/): Python websockets
# offering each parameter, and Node ws with its defaults, against the release
# binary in --deflate shared and dedicated modes. Installs websockets into
# .venv and ws into tests/clients/node_modules when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
for mode in shared dedicated; do
  log=$(mktemp)
  target/release/echocast --listen 127.0.0.1:0 --deflate "$mode" >"$log" 2>/dev/null &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on ws:\/\///p' "$log")
  timeout 300 "$venv/bin/python" tests/clients/deflate.py "$addr" "$mode"
  timeout 300 node tests/clients/deflate.js "$addr"
  kill $pid
  wait $pid 2>/dev/null || true
  rm -f "$log"
done
