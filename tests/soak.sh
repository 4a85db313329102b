#!/usr/bin/env bash
# The soak test (tests/soak.rs) on the release build: mixed echo, broadcast
# rooms with joins and leaves, churn, slow consumers and hostile clients at
# once, for SOAK_SECONDS (default 60). Prints a one-line summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS="${SOAK_SECONDS:-60}"
cargo test --release --test soak -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -v '^$'
