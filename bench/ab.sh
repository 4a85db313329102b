#!/usr/bin/env bash
# Before/after: echocast at git revision BASE against the working tree, on
# the same matrix as bench/compare.sh, alternating the two servers run by run
# (same machine, same minutes), and prints each case's median figure for
# both and their ratio (after / before).
#
#   bench/ab.sh HEAD~3                       # 5 repetitions, 3 s per run
#   bench/ab.sh de5f442 --reps 3 --duration 2 --scenarios "echo-20 idle-10k"
#   bench/ab.sh --flags "--inspect off" "--inspect on"   # one build, two settings
#   AB_FLAGS="--inspect off" bench/ab.sh HEAD            # both servers with these flags
#   bench/ab.sh HEAD --scenarios "echo-tls-16m echo-tls-1k"   # TLS cases: the servers get the
#                                            # certificate compare.sh makes (tls_certificate)
#
# BASE is built in a git worktree under target/ab-base. With --flags, the
# working tree's server runs twice, "before" with the first flags and
# "after" with the second. Server pinned to CPU 0, echocast-bench (from the
# working tree) to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${1:?usage: bench/ab.sh BASE-REVISION|--flags "BEFORE" "AFTER" [--reps N] [--duration S] [--scenarios "..."]}
shift
FLAGS_BEFORE= FLAGS_AFTER=
if [ "$BASE" = --flags ]; then
    FLAGS_BEFORE=$1 FLAGS_AFTER=$2
    shift 2
    BASE="flags: $FLAGS_BEFORE"
fi
REPS=5
DURATION=3
SCENARIOS="echo-20 echo-20-p16 echo-1k echo-64k echo-16m latency broadcast-1000 broadcast-16k broadcast-1k sse-1000 sse-1k publish-100 connect-50 idle-10k"
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=bench/scenarios.sh
. "$ROOT/bench/scenarios.sh"
tls_certificate "$ROOT/bench/results/tls"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "$FLAGS_BEFORE$FLAGS_AFTER" ]; then
    WT=$ROOT/target/ab-base
    rm -rf "$WT"; git worktree prune
    git worktree add --detach --quiet "$WT" "$BASE"
    trap 'git worktree remove --force "$WT" 2>/dev/null || true' EXIT
    echo "== building $BASE and the working tree"
    (cd "$WT" && CARGO_TARGET_DIR=$ROOT/target/ab-base-target cargo build --release --quiet --bin echocast)
    cargo build --release --quiet --bin echocast --bin echocast-bench
    declare -A BIN=([before]=$ROOT/target/ab-base-target/release/echocast [after]=$ROOT/target/release/echocast)
else
    echo "== building the working tree; before: $FLAGS_BEFORE, after: $FLAGS_AFTER"
    cargo build --release --quiet --bin echocast --bin echocast-bench
    declare -A BIN=([before]="$ROOT/target/release/echocast $FLAGS_BEFORE" [after]="$ROOT/target/release/echocast $FLAGS_AFTER")
fi
BENCH=$ROOT/target/release/echocast-bench
RAW=$ROOT/target/ab.jsonl
: > "$RAW"
PORT=9700
for rep in $(seq 1 "$REPS"); do
    for scenario in $SCENARIOS; do
        order="before after"; [ $((rep % 2)) -eq 0 ] && order="after before"
        for which in $order; do
            PORT=$((PORT + 1))
            log=$ROOT/target/ab-server.log
            tls=; case $scenario in *tls*) tls="--tls-cert $TLS_CA --tls-key $TLS_KEY" ;; esac
            taskset -c 0 bash -c "exec ${BIN[$which]} ${AB_FLAGS:-} $tls --listen 127.0.0.1:$PORT" > "$log" 2>&1 &
            pid=$!
            for _ in $(seq 100); do grep -q "listening on" "$log" 2>/dev/null && break; sleep 0.05; done
            # shellcheck disable=SC2046
            line=$(taskset -c 1 "$BENCH" $(scenario_args "$scenario") \
                --addr 127.0.0.1:$PORT --server-pid $pid 2>/dev/null | tail -1) || line=null
            echo "{\"which\":\"$which\",\"case\":\"$scenario\",\"result\":$line}" >> "$RAW"
            kill $pid 2>/dev/null || true
            wait $pid 2>/dev/null || true
        done
        printf '.'
    done
done
echo
python3 - "$RAW" "$BASE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
metric = lambda r: next((k, r[k]) for k in (
    "server_cpu_ns_per_message", "server_cpu_ns_per_delivery",
    "server_cpu_ns_per_handshake", "rss_bytes_per_connection") if k in r)
cases = list(dict.fromkeys(r["case"] for r in rows))
print(f"{'case':16} {'figure':30} {'before ' + sys.argv[2]:>18} {'after':>12} {'after/before':>13}")
for case in cases:
    got = {}
    for which in ("before", "after"):
        vals = [metric(r["result"]) for r in rows if r["case"] == case and r["which"] == which and r["result"]]
        got[which] = (vals[0][0], statistics.median(v for _, v in vals), min(v for _, v in vals), max(v for _, v in vals)) if vals else None
    if not all(got.values()):
        print(f"{case:16} missing results"); continue
    (name, b, bmin, bmax), (_, a, amin, amax) = got["before"], got["after"]
    print(f"{case:16} {name:30} {b:>10.1f} ({bmin:.0f}-{bmax:.0f}) {a:>8.1f} ({amin:.0f}-{amax:.0f}) {a / b:>8.3f}")
PY
