#!/usr/bin/env bash
# Stubs (issue 27) against real clients: the ticker example from Python
# websockets (tests/clients/stubs.py) and the graphql-transport-ws example
# driven by the graphql-ws npm client (tests/clients/graphql.js); then a HAR
# that headless Chromium recorded against a Python websockets server,
# replayed by --stubs to a client with other ids (tests/clients/har_browser.py).
# Installs websockets into .venv, the Node clients and Chromium when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
dir=$(mktemp -d)
target/release/echocast --listen 127.0.0.1:0 --stubs examples/stubs/ticker.json >"$dir/out" 2>"$dir/log" &
pid=$!
target/release/echocast --listen 127.0.0.1:0 --stubs examples/stubs/graphql-transport-ws.json >"$dir/out2" 2>"$dir/log2" &
pid2=$!
trap 'kill $pid $pid2 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && grep -q listening "$dir/out2" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on ws:\/\///p' "$dir/out")
addr2=$(sed -n 's/^listening on ws:\/\///p' "$dir/out2")
timeout 60 "$venv/bin/python" tests/clients/stubs.py "$addr"
timeout 60 node tests/clients/graphql.js "$addr2"
# shellcheck source=tests/clients/chromium.sh
. tests/clients/chromium.sh
timeout 180 "$venv/bin/python" tests/clients/har_browser.py target/release/echocast
