#!/usr/bin/env bash
# HTTP/2 (docs/http2.md) against real clients: Python's h2 for WebSockets
# over HTTP/2 (tests/clients/http2.py: h2c and TLS with ALPN, echo, several
# streams and GETs on one connection, a room shared with HTTP/1.1, 16 MiB
# through flow control, a stream never read, resets, knobs, every --http2
# mode, GOAWAY on shutdown); curl --http2-prior-knowledge and --http2 (TLS)
# for the page, /healthz and an SSE subscription with a POST to its room;
# h2load (Debian's nghttp2-client) for a short GET load. Installs h2 into
# .venv and nghttp2-client when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PY=h2
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
if ! command -v h2load >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
timeout 300 "$venv/bin/python" tests/clients/http2.py target/release/echocast

start_tls_server
port=${addr##*:}
fail() { echo "http2_clients.sh: $*"; tail -20 "$dir/log"; exit 1; }

# curl over h2c (prior knowledge) and over TLS (ALPN): the protocol it used.
v=$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http2-prior-knowledge "http://127.0.0.1:$port/healthz")
[ "$v" = "2 200" ] || fail "h2c /healthz: $v"
v=$(curl -s -o "$dir/page" -w '%{http_version} %{http_code}' --http2 --cacert "$dir/cert.pem" "https://localhost:$port/")
[ "$v" = "2 200" ] || fail "https / over h2: $v"
grep -qi "<html" "$dir/page" || fail "the page over h2 is not HTML"
echo "ok  curl: /healthz over h2c, the page over h2 (TLS, ALPN)"

# An SSE subscription over HTTP/2, and a POST to its room over HTTP/2.
curl -s -N --http2-prior-knowledge -H 'Accept: text/event-stream' --max-time 3 \
  "http://127.0.0.1:$port/broadcast/sse-h2" >"$dir/sse" &
sse=$!
for _ in $(seq 50); do grep -q "subscribed to" "$dir/log" && break; sleep 0.05; done
v=$(curl -s -o /dev/null -w '%{http_version} %{http_code}' --http2-prior-knowledge \
  -H 'Content-Type: text/plain' --data-binary 'hello over h2' "http://127.0.0.1:$port/broadcast/sse-h2")
[ "$v" = "2 200" ] || fail "POST over h2: $v"
wait $sse || true
grep -q "^data: hello over h2$" "$dir/sse" || { cat "$dir/sse"; fail "the event did not arrive over h2"; }
echo "ok  curl: an SSE subscription and a POST to its room, both over h2c"

# h2load: GETs on a few connections with many streams each.
h2load -c 4 -m 32 -n 20000 "http://127.0.0.1:$port/healthz" >"$dir/h2load" 2>&1 ||
  { cat "$dir/h2load"; fail "h2load failed"; }
grep -q "20000 succeeded, 0 failed, 0 errored" "$dir/h2load" ||
  { cat "$dir/h2load"; fail "h2load: not every request succeeded"; }
grep -E "^finished in|^requests:" "$dir/h2load" | sed 's/^/    /'
echo "ok  h2load: 20,000 GETs on 4 connections × 32 streams"
kill $pid
wait $pid 2>/dev/null || true
