#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs by itself (a Python
# venv with kosoku and websockets under .venv; Node ws under tests/clients; Debian's chromium and chromium-driver;
# cargo-fuzz; podman for the image test; redis-server for tests/cluster.rs;
# Python h2 and Debian's nghttp2-client for tests/http2_clients.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/cluster.rs starts its own redis-server (Debian's package).
if ! command -v redis-server >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
# The heavy memory-budget test (200 clients × 60 MiB) needs the release build.
cargo test --release --test memory -- --ignored
tests/soak.sh
tests/autobahn.sh
# Over wss:// (socat in front, see autobahn.sh): sections 1-10 and a deflate subset.
TLS=1 CASES='1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.* 12.1.* 13.1.*' tests/autobahn.sh
# Through --proxy to an upstream echocast (all 517: PROXY=1 tests/autobahn.sh).
PROXY=1 CASES='1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.1.* 10.* 12.1.* 13.1.*' tests/autobahn.sh
tests/deflate_clients.sh
tests/tls_clients.sh
tests/endpoints_clients.sh
tests/rooms_clients.sh
tests/stubs_clients.sh
tests/proxy_clients.sh
tests/http2_clients.sh
tests/browser.sh
tests/docs.sh
tests/install.sh
tests/container.sh
tests/fuzz.sh
