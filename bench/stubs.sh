#!/usr/bin/env bash
# What a stub match costs against an echo of the same message (issue 27):
# one server with bench/stubs.json, `echocast-bench echo --text` on a plain
# echo path and on two stub paths whose reply is the message itself
# (`{{message}}`, so the load generator checks every reply byte for byte:
# `any`, and a regex), on one where no stub matches (a JSON pattern: the
# miss is explained and kept for /stubs/unmatched, then the message is
# echoed), and with JSON messages (`echocast-bench echo --json`) on a
# JSON-subset stub that rebuilds the object from templates, against the
# echo of the same JSON. Server CPU per message, median of REPS runs each,
# alternated.
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
# label, path, the load generator's message flag
cases=("echo / --text" "any /stub-any --text" "regex /stub-regex --text" "miss /stub-miss --text"
       "echo-json / --json" "json /stub-json --json")
declare -A figures
for _ in $(seq "$REPS"); do
    for c in "${cases[@]}"; do
        read -r label path flag <<<"$c"
        ns=$(taskset -c 1 target/release/echocast-bench echo --addr "$addr" --path "$path" "$flag" \
            -c 100 -s "$SIZE" --duration "$DURATION" --server-pid "$pid" |
            sed -n 's/.*"server_cpu_ns_per_message":\([0-9.]*\).*/\1/p' | tail -n 1)
        figures[$label]="${figures[$label]:-} $ns"
        printf .
    done
done
echo
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-10s %-12s %10s %s\n' case path "ns/msg" "vs its echo"
for c in "${cases[@]}"; do
    read -r label path flag <<<"$c"
    base=echo
    [ "$flag" = --json ] && base=echo-json
    b=$(echo "${figures[$base]}" | median)
    m=$(echo "${figures[$label]}" | median)
    printf '%-10s %-12s %10.0f %6.2fx   (%s)\n' "$label" "$path" "$m" "$(echo "$m / $b" | bc -l)" "${figures[$label]# }"
done
