#!/usr/bin/env bash
# What a stub match costs against an echo of the same message (issue 27):
# one server with bench/stubs.json, `echocast-bench echo --text` on a plain
# echo path and on two stub paths whose reply is the message itself
# (`{{message}}`, so the load generator checks every reply byte for byte:
# `any`, and a regex), and on one where no stub matches (a JSON pattern:
# the miss is explained and kept for /stubs/unmatched, then the message is
# echoed). Server CPU per message, median of REPS runs each, alternated.
#
#   bench/stubs.sh [--reps 5] [--duration 3] [--size 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=5 DURATION=3 SIZE=1024
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cargo build --release --quiet --bin echocast --bin echocast-bench
dir=$(mktemp -d)
taskset -c 0 target/release/echocast --listen 127.0.0.1:0 --inspect off --stubs bench/stubs.json >"$dir/out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on ws:\/\///p' "$dir/out")
declare -A figures
for _ in $(seq "$REPS"); do
    for path in / /stub-any /stub-regex /stub-miss; do
        ns=$(taskset -c 1 target/release/echocast-bench echo --addr "$addr" --path "$path" --text \
            -c 100 -s "$SIZE" --duration "$DURATION" --server-pid "$pid" |
            sed -n 's/.*"server_cpu_ns_per_message":\([0-9.]*\).*/\1/p' | tail -n 1)
        figures[$path]="${figures[$path]:-} $ns"
        printf .
    done
done
echo
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo_ns=$(echo "${figures[/]}" | median)
printf '%-12s %10s %s\n' path "ns/msg" "vs echo"
for path in / /stub-any /stub-regex /stub-miss; do
    m=$(echo "${figures[$path]}" | median)
    printf '%-12s %10.0f %6.2fx   (%s)\n' "$path" "$m" "$(echo "$m / $echo_ns" | bc -l)" "${figures[$path]# }"
done
