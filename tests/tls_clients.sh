#!/usr/bin/env bash
# wss:// against real clients (tests/clients/tls.py and tls.js): the release
# binary with --tls-self-signed writes its certificate with --tls-cert-out and
# the clients trust it; plain ws:// is checked on the same port. Installs
# websockets into .venv and ws into tests/clients/node_modules when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
start_tls_server
timeout 300 "$venv/bin/python" tests/clients/tls.py "$addr" "$dir/cert.pem"
timeout 300 node tests/clients/tls.js "$addr" "$dir/cert.pem"
# The log says which transport each connection took.
grep -q ": open wss /" "$dir/log" && grep -q ": open ws /" "$dir/log" ||
  { echo "tls_clients.sh: the log does not name each connection's transport"; exit 1; }
kill $pid
wait $pid 2>/dev/null || true
