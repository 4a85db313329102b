#!/usr/bin/env bash
# Builds an echocast that runs on any x86_64 Linux with no shared libraries:
# glibc linked statically (crt-static), symbols stripped. Prints the binary's
# path. echocast does no name lookup through the C library (`localhost` is
# resolved by echocast itself), so an empty root filesystem is enough.
#
#   packaging/static.sh        # -> target/x86_64-unknown-linux-gnu/release/echocast
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# --target keeps RUSTFLAGS off build scripts and proc macros (they run on the
# host); the profile overrides drop debug info, which the release profile
# keeps for profiling.
RUSTFLAGS='-C target-feature=+crt-static' \
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release --quiet --locked --target "$target" --bin echocast
echo "target/$target/release/echocast"
