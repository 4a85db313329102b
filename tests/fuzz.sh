#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default
# 60) with AddressSanitizer, starting from the committed seeds, and prints the
# exec counts. Fails on any crash (the input is kept in fuzz/artifacts/TARGET/).
# Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"frame_header handshake connection stubs cluster client h2"}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
cd fuzz
for t in $targets; do
  mkdir -p "$work/$t"
  cp seeds/"$t"/* "$work/$t"/
  echo "== fuzzing $t for ${seconds}s"
  # RUSTC_BOOTSTRAP: cargo-fuzz passes -Z flags for the sanitizer (stable toolchain).
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "$work/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$work/$t.log" 2>&1; then
    tail -n 60 "$work/$t.log"
    echo "fuzz target $t FAILED (see fuzz/artifacts/$t/)"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
  corpus=$(ls "$work/$t" | wc -l)
  summary+=("$t: $execs execs in ${seconds}s, corpus $corpus inputs")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
