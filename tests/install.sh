#!/usr/bin/env bash
# Installing as a user would (issue 17): `cargo package` makes a crate of the
# code, README and manual only (no benchmark results, fuzz corpora or test
# clients), and `cargo install --path .` installs an `echocast` that serves
# and an `echocast-bench` that runs.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT

cargo package --list --allow-dirty --locked 2>/dev/null >"$work/files"
echo "crate: $(wc -l <"$work/files") files"
if grep -E '^(bench|fuzz|tests|packaging|\.ci)/|^docs/(benchmarks|conformance)' "$work/files"; then
  echo "FAIL: the crate holds files that are not the program or its manual"; exit 1
fi
for f in Cargo.toml README.md src/main.rs src/lib.rs src/page.html src/bin/echocast-bench/main.rs; do
  grep -qx "$f" "$work/files" || { echo "FAIL: the crate misses $f"; exit 1; }
done
# Verified (the packaged crate alone builds) in a target directory of its own:
# cargo's metadata hash leaves out a path package's path, so building the
# packaged copy in target/ would overwrite the repository's own artifacts.
CARGO_TARGET_DIR=$PWD/target/package-check cargo package --allow-dirty --locked --quiet 2>&1 | grep -v '^warning: manifest has no\|^  |\|^  = note\|^$' || true
crate=$(ls target/package-check/package/echocast-*.crate)
echo "packaged: $crate ($(stat -c %s "$crate") bytes)"

# The shared target directory keeps this from building everything twice.
CARGO_TARGET_DIR=$PWD/target cargo install --quiet --locked --path . --root "$work/root"
ls "$work/root/bin"
[ -x "$work/root/bin/echocast" ] && [ -x "$work/root/bin/echocast-bench" ]
"$work/root/bin/echocast" --version
"$work/root/bin/echocast-bench" --help | head -n 3
"$work/root/bin/echocast" --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/out" && break; sleep 0.1; done
addr=$(sed -n 's|^listening on ws://||p' "$work/out")
"$work/root/bin/echocast" health "$addr"
"$work/root/bin/echocast-bench" echo --addr "$addr" -c 2 --duration 1 | tail -n 1 | grep -q '"messages_per_sec":[1-9]' ||
  { echo "FAIL: echocast-bench against the installed server"; exit 1; }
echo "install: ok"
