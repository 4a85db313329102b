#!/usr/bin/env bash
# /stats, /metrics and subprotocols against real clients (tests/clients/stats.py:
# Python websockets, and prometheus_client's text parser; tests/clients/
# subprotocol.js: Node ws), then every URL knob from Python websockets
# (tests/clients/knobs.py) and the frame inspector (tests/clients/inspector.py). Installs websockets and prometheus_client into
# .venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PY=prometheus_client
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
dir=$(mktemp -d)
target/release/echocast --listen 127.0.0.1:0 --subprotocol chat.v1 >"$dir/out" 2>"$dir/log" &
pid=$!
target/release/echocast --listen 127.0.0.1:0 --greeting 'welcome #{id}' >"$dir/out2" 2>"$dir/log2" &
pid2=$!
trap 'kill $pid $pid2 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && grep -q listening "$dir/out2" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on ws:\/\///p' "$dir/out")
addr2=$(sed -n 's/^listening on ws:\/\///p' "$dir/out2")
timeout 120 "$venv/bin/python" tests/clients/stats.py "$addr"
timeout 60 node tests/clients/subprotocol.js "$addr"
timeout 120 "$venv/bin/python" tests/clients/knobs.py "$addr" "$pid" "$addr2"
timeout 60 "$venv/bin/python" tests/clients/inspector.py "$addr"
