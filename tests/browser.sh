#!/usr/bin/env bash
# Headless Chromium end-to-end test of the built-in page. Installs Debian's
# chromium and chromium-driver when they are missing (needs root, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/chromium.sh
. tests/clients/chromium.sh
cargo build --release --quiet
timeout 180 python3 tests/browser.py target/release/echocast
timeout 180 python3 tests/browser.py target/release/echocast --tls
# WebSockets over HTTP/2 from the page (docs/http2.md): every --http2 mode.
timeout 300 python3 tests/clients/http2_browser.py target/release/echocast
