#!/usr/bin/env bash
# /stats, /metrics and subprotocols against real clients (tests/clients/stats.py:
# Python websockets, and prometheus_client's text parser; tests/clients/
# subprotocol.js: Node ws). Installs websockets
# and prometheus_client into .venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${KOSOKU_VENV:-$PWD/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import websockets, prometheus_client' 2>/dev/null ||
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'websockets>=14' prometheus_client
cargo build --release --quiet --bin echocast
dir=$(mktemp -d)
target/release/echocast --listen 127.0.0.1:0 --subprotocol chat.v1 >"$dir/out" 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on ws:\/\///p' "$dir/out")
timeout 120 "$venv/bin/python" tests/clients/stats.py "$addr"
[ -d tests/clients/node_modules/ws ] ||
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
timeout 60 node tests/clients/subprotocol.js "$addr"
