#!/usr/bin/env bash
# Rooms over HTTP (issue 20) with real clients: curl (POST with -d,
# --data-binary @file, chunked with -T -, a 2 MiB body with Expect:
# 100-continue, -N for an event stream), Python httpx over http:// and
# https:// (tests/clients/rooms.py), and Chromium's own EventSource
# (tests/clients/rooms_browser.py). Installs httpx into .venv, and chromium
# with chromium-driver, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PY=httpx
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
bin=target/release/echocast
start_tls_server --room-history 5 --max-message-size 1MiB
url="http://$addr/broadcast/curl"
fail() { echo "rooms_clients: $*" >&2; exit 1; }

# A curl -N subscriber for the whole curl part.
curl -sN -H 'Accept: text/event-stream' "$url" >"$dir/events" &
for _ in $(seq 100); do [ -s "$dir/events" ] && break; sleep 0.05; done
grep -q '^retry: ' "$dir/events" || fail "no retry line from curl -N"

out=$(curl -sf -H 'Content-Type: text/plain' -d 'from curl -d' "$url")
[ "$out" = '{"room":"/broadcast/curl","id":1,"members":1}' ] || fail "-d: $out"
head -c 100000 /dev/urandom >"$dir/blob"
out=$(curl -sf -H 'Content-Type: application/octet-stream' --data-binary @"$dir/blob" "$url")
[[ $out == *'"id":2'* ]] || fail "--data-binary: $out"
out=$(printf 'chunked\nfrom stdin' | curl -sf -T - -X POST -H 'Content-Type: text/plain' -v "$url" 2>"$dir/chunked.err")
[[ $out == *'"id":3'* ]] || fail "-T -: $out"
grep -qi '^> Transfer-Encoding: chunked' "$dir/chunked.err" || fail "-T - did not send chunked"
# 2 MiB (over this server's 1 MiB: 413, answered instead of 100 Continue), then
# on a server with the default size: 100 Continue, then 200.
head -c 2097152 /dev/urandom >"$dir/big"
code=$(curl -s -o /dev/null -w '%{http_code}' --data-binary @"$dir/big" "$url")
[ "$code" = 413 ] || fail "2 MiB over --max-message-size: $code"
"$bin" --listen 127.0.0.1:0 >"$dir/out2" 2>/dev/null &
for _ in $(seq 100); do grep -q listening "$dir/out2" && break; sleep 0.05; done
addr2=$(sed -n 's/^listening on ws:\/\///p' "$dir/out2")
out=$(curl -sf -v -H 'Content-Type: application/octet-stream' --data-binary @"$dir/big" \
  "http://$addr2/broadcast/big" 2>"$dir/big.err")
grep -q '^> Expect: 100-continue' "$dir/big.err" || fail "curl did not send Expect: 100-continue"
grep -q '^< HTTP/1.1 100 Continue' "$dir/big.err" || fail "no 100 Continue"
[[ $out == *'"id":1'* ]] || fail "2 MiB: $out"
code=$(curl -s -o /dev/null -w '%{http_code}' -d x "http://$addr/echo")
[ "$code" = 405 ] || fail "POST to an echo path: $code"

# What curl -N received: the three messages, in order, with their ids.
for _ in $(seq 100); do grep -q '^id: 3' "$dir/events" && break; sleep 0.05; done
blob64=$(base64 -w0 "$dir/blob")
expected=$(printf 'id: 1\ndata: from curl -d\n\nid: 2\nevent: binary\ndata: %s\n\nid: 3\ndata: chunked\ndata: from stdin\n\n' "$blob64")
got=$(sed -n '/^id: 1$/,$p' "$dir/events")
[ "$got" = "$(printf '%s' "$expected")" ] || fail "curl -N got: $(head -c 300 <<<"$got")"
echo "curl: -d, --data-binary @file, -T - (chunked), 2 MiB with 100-continue, 413, 405, -N: ok"

timeout 60 "$venv/bin/python" tests/clients/rooms.py "$addr"
timeout 60 "$venv/bin/python" tests/clients/rooms.py "$addr" "$dir/cert.pem"

# shellcheck source=tests/clients/chromium.sh
. tests/clients/chromium.sh
timeout 180 python3 tests/clients/rooms_browser.py "$bin"
