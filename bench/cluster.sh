#!/usr/bin/env bash
# Rooms across two processes (issue 28): the fan-out scenarios with the
# members split over two instances on one port (`--reuse-port --cluster`,
# a redis-server of our own), against one process without `--cluster`.
# Server CPU per delivery, median of REPS runs: one process; the two
# instances together; Redis alone. Every delivery is checked by the load
# generator (order and content), as in bench/compare.sh.
#
#   bench/cluster.sh [--reps 3] [--duration 3]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3 DURATION=3
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
command -v redis-server >/dev/null || { echo "bench/cluster.sh: needs redis-server (apt-get install redis-server)"; exit 2; }
cargo build --release --quiet --bin echocast --bin echocast-bench
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
redis=$!; pids+=("$redis")
sleep 0.5
one_port=$(free_port)
target/release/echocast --listen "127.0.0.1:$one_port" --inspect off >/dev/null 2>&1 &
one=$!; pids+=("$one")
port=$(free_port)
for i in a b; do
    target/release/echocast --listen "127.0.0.1:$port" --reuse-port --inspect off \
        --cluster "redis://127.0.0.1:$rport" >"$dir/$i.out" 2>/dev/null &
    pids+=("$!")
done
a=${pids[2]} b=${pids[3]}
for _ in $(seq 100); do
    target/release/echocast health "127.0.0.1:$one_port" >/dev/null 2>&1 &&
        target/release/echocast health "127.0.0.1:$port" >/dev/null 2>&1 && break
    sleep 0.1
done
# label, scenario and its arguments
cases=("broadcast-1000 broadcast -c 1000 -s 20"
       "broadcast-1k broadcast -c 1000 -s 1024"
       "sse-1000 sse -c 1000 -s 20"
       "publish-100 publish -c 100 -s 20")
declare -A one_f inst_f redis_f
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | tail -n 1; }
for r in $(seq "$REPS"); do
    for c in "${cases[@]}"; do
        read -r label scenario args <<<"$c"
        # shellcheck disable=SC2086
        out=$(target/release/echocast-bench "$scenario" --addr "127.0.0.1:$one_port" --path "/broadcast/$label" \
            $args --duration "$DURATION" --server-pid "$one")
        one_f[$label]="${one_f[$label]:-} $(echo "$out" | field server_cpu_ns_per_delivery)"
        # shellcheck disable=SC2086
        out=$(ECHOCAST_BENCH_ALSO_PIDS="$b,$redis" target/release/echocast-bench "$scenario" \
            --addr "127.0.0.1:$port" --path "/broadcast/$label-$r" $args --duration "$DURATION" --server-pid "$a")
        own=$(echo "$out" | field server_cpu_ns_per_delivery)
        other=$(echo "$out" | sed -n "s/.*\"$b\":\([0-9.]*\).*/\1/p" | tail -n 1)
        rd=$(echo "$out" | sed -n "s/.*\"$redis\":\([0-9.]*\).*/\1/p" | tail -n 1)
        inst_f[$label]="${inst_f[$label]:-} $(echo "$own + $other" | bc -l)"
        redis_f[$label]="${redis_f[$label]:-} $rd"
        printf .
    done
done
echo
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-16s %12s %14s %8s %12s\n' case "one process" "two instances" ratio "Redis"
for c in "${cases[@]}"; do
    read -r label _ <<<"$c"
    o=$(echo "${one_f[$label]}" | median)
    i=$(echo "${inst_f[$label]}" | median)
    rd=$(echo "${redis_f[$label]}" | median)
    printf '%-16s %12.0f %14.0f %7.2fx %12.1f   ns CPU per delivery (runs: one%s; two%s)\n' \
        "$label" "$o" "$i" "$(echo "$i / $o" | bc -l)" "$rd" "${one_f[$label]}" "${inst_f[$label]}"
done
