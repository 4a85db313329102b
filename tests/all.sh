#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs (a Python venv with
# kosoku under .venv) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
tests/autobahn.sh
