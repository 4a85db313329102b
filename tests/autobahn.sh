#!/usr/bin/env bash
# Runs the Autobahn TestSuite cases of sections 1-13 (all of 9 included; 12
# and 13 are permessage-deflate, 216 cases, most of the run's time) against
# the release binary through kosoku, fails unless every case's behavior and
# behaviorClose is OK or INFORMATIONAL, and rewrites docs/conformance.md.
#
#   tests/autobahn.sh            # sections 1-13 (all 517 cases)
#   CASES='9.*' tests/autobahn.sh  # a subset (docs/conformance.md is left alone)
#   TLS=1 tests/autobahn.sh      # the same cases over wss:// (see below)
#   TLS=1 EXCLUDE='12.* 13.*' tests/autobahn.sh   # what CI runs over wss://
#   PROXY=1 tests/autobahn.sh    # through --proxy to an upstream echocast
#
# kosoku cannot speak wss:// (it refuses the scheme), so with TLS=1 the server
# runs with --tls-self-signed and socat stands in front of it as the TLS
# client: kosoku talks plain WebSocket to socat, socat carries every byte
# (and each half-close) over TLS to echocast's wss:// port, verifying the
# certificate. The result goes to the "Over wss://" section of
# docs/conformance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=${KOSOKU_VENV:-$root/.venv}
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kosoku
fi

cargo build --release --quiet
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

TLS=${TLS:-0}
PROXY=${PROXY:-0}
tls_args=()
[ "$TLS" = 1 ] && tls_args=(--tls-self-signed --tls-cert-out "$work/cert.pem")
upstream_pid=
if [ "$PROXY" = 1 ]; then
  # With PROXY=1 kosoku talks to a proxy whose upstream is another echocast:
  # every case crosses both legs (docs/proxy.md).
  RUST_LOG=warn target/release/echocast --listen 127.0.0.1:0 --inspect off \
    >"$work/up.stdout" 2>"$work/up.stderr" &
  upstream_pid=$!
  trap 'kill $upstream_pid 2>/dev/null || true; cleanup' EXIT
  for _ in $(seq 100); do grep -q '^listening' "$work/up.stdout" 2>/dev/null && break; sleep 0.1; done
  tls_args+=(--proxy "/=ws://$(sed -n 's|^listening on ws://||p' "$work/up.stdout")/*")
fi
RUST_LOG=${RUST_LOG:-warn} target/release/echocast --listen 127.0.0.1:0 "${tls_args[@]}" \
  >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on wss*://' "$work/stdout" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr"; exit 1; }
  sleep 0.1
done
addr=$(sed -n 's|^listening on wss*://||p' "$work/stdout")
[ -n "$addr" ] || { echo "server did not start"; cat "$work/stderr"; exit 1; }
socat_pid=
if [ "$TLS" = 1 ]; then
  command -v socat >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq socat >/dev/null
  }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,nodelay" \
    "OPENSSL:localhost:${addr##*:},cafile=$work/cert.pem,verify=1,nodelay" 2>"$work/socat.log" &
  socat_pid=$!
  trap 'kill $socat_pid 2>/dev/null || true; cleanup' EXIT
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  addr=127.0.0.1:$port
fi

select=()
write_doc=1
for c in ${CASES:-}; do select+=(-i "$c"); write_doc=0; done
for c in ${EXCLUDE:-}; do select+=(-x "$c"); done
start=$(date +%s.%N)
set +e
"$venv/bin/kosoku" -p 2 -o "$work/reports" "${select[@]}" "$addr" >"$work/kosoku.log" 2>&1
set -e
wall=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
kill -0 "$server_pid" 2>/dev/null || { echo "server died during the run"; cat "$work/stderr"; exit 1; }

version=$("$venv/bin/pip" show kosoku 2>/dev/null | sed -n 's/^Version: //p')
PROXY=$PROXY TLS=$TLS WRITE_DOC=$write_doc WALL=$wall KOSOKU_VERSION=$version python3 - "$work/reports" "$root/docs/conformance.md" <<'PY'
import json, os, sys, collections
reports, doc = sys.argv[1], sys.argv[2]
for cand in ("index.json", "clients/index.json"):
    path = os.path.join(reports, cand)
    if os.path.exists(path):
        break
else:
    sys.exit("kosoku wrote no index.json")
index = json.load(open(path))
good = {"OK", "INFORMATIONAL"}
def key(case):
    return [int(p) for p in case.split(".")]
rows = collections.OrderedDict()
bad = []
total = 0
for agent, cases in index.items():
    for case in sorted(cases, key=key):
        r = cases[case]
        total += 1
        sec = case.split(".")[0]
        counts = rows.setdefault(sec, collections.Counter())
        counts[r["behavior"]] += 1
        counts["close " + r["behaviorClose"]] += 1
        if r["behavior"] not in good or r["behaviorClose"] not in good:
            bad.append((case, r["behavior"], r["behaviorClose"]))
if total == 0:
    sys.exit("no cases ran")
names = {"1": "Framing", "2": "Pings/Pongs", "3": "Reserved bits", "4": "Opcodes",
         "5": "Fragmentation", "6": "UTF-8 handling", "7": "Close handling",
         "9": "Limits/performance", "10": "Misc", "12": "permessage-deflate",
         "13": "permessage-deflate parameters"}
lines = ["# Autobahn conformance", "",
         "Generated by `tests/autobahn.sh` (kosoku %s driving the Autobahn TestSuite case files"
         " against the release binary, default flags: `--deflate shared`)."
         " See the end of this page for a kosoku bug that hits servers which send small"
         " messages uncompressed." % os.environ["KOSOKU_VERSION"],
         "", "Cases: %d. Wall time of the kosoku run: %s s (`-p 2`)." % (total, os.environ["WALL"]), "",
         "| Section | Cases | OK | INFORMATIONAL | NON-STRICT | FAILED/other | close OK | close INFORMATIONAL | close other |",
         "|---|---|---|---|---|---|---|---|---|"]
for sec, c in sorted(rows.items(), key=lambda kv: int(kv[0])):
    n = c["OK"] + c["INFORMATIONAL"] + c["NON-STRICT"] + sum(v for k, v in c.items() if not k.startswith("close ") and k not in ("OK", "INFORMATIONAL", "NON-STRICT"))
    other = n - c["OK"] - c["INFORMATIONAL"] - c["NON-STRICT"]
    cother = n - c["close OK"] - c["close INFORMATIONAL"]
    lines.append("| %s %s | %d | %d | %d | %d | %d | %d | %d | %d |" % (
        sec, names.get(sec, ""), n, c["OK"], c["INFORMATIONAL"], c["NON-STRICT"], other,
        c["close OK"], c["close INFORMATIONAL"], cother))
lines += ["", "Result: %s" % ("every case OK or INFORMATIONAL" if not bad else "%d cases not OK: %s" % (len(bad), bad)), "",
          "## A kosoku bug to know about (sections 12-13)", "",
          "kosoku 0.1.0 crashes (\"Strings must be encoded before hashing\", reported as ERROR) when a"
          " server answers a compressed text message with an *uncompressed* one on a connection without"
          " context takeover, which RFC 7692 allows per message. Node `ws` does that below its"
          " 1024-byte threshold and, as measured when issue 9 was written, gets 12 ERRORs (13.2/13.5/13.6/13.7 .1-.3). It is a runner bug, not a"
          " protocol error; echocast's default `--deflate-threshold 0` compresses every message, so"
          " its report is clean.", ""]
TLS_HEADER = "## Over wss://"
PROXY_HEADER = "## Through --proxy"
old = open(doc).read() if os.path.exists(doc) else ""


def sections(text):
    # The page's main part, and its sections by header, in order.
    cuts = sorted((text.index(h), h) for h in (TLS_HEADER, PROXY_HEADER) if h in text)
    base = text[:cuts[0][0]] if cuts else text
    found = {}
    for i, (at, h) in enumerate(cuts):
        end = cuts[i + 1][0] if i + 1 < len(cuts) else len(text)
        found[h] = text[at:end].rstrip("\n") + "\n"
    return base.rstrip("\n") + "\n", found


def write(base, found):
    parts = [base] + [found[h] for h in (TLS_HEADER, PROXY_HEADER) if h in found]
    open(doc, "w").write("\n".join(parts))


if os.environ["PROXY"] == "1":
    summary = "%d cases, %s; wall time %s s." % (
        total, "every case OK or INFORMATIONAL" if not bad else "%d not OK: %s" % (len(bad), bad),
        os.environ["WALL"])
    text = "\n".join([PROXY_HEADER, "",
        "`PROXY=1 tests/autobahn.sh`: kosoku talks to an echocast running `--proxy /=ws://UPSTREAM/*`"
        " whose upstream is another echocast: every case crosses both legs (the client leg answers"
        " kosoku, each message goes to the upstream and its echo comes back; closes and failures"
        " wait for the upstream's closing handshake, so what it echoed first arrives first).", "",
        "| Section | Cases | OK | INFORMATIONAL | other | close OK | close INFORMATIONAL | close other |",
        "|---|---|---|---|---|---|---|---|"] + [
        "| %s %s | %d | %d | %d | %d | %d | %d | %d |" % (
            sec, names.get(sec, ""), sum(v for k, v in c.items() if not k.startswith("close ")),
            c["OK"], c["INFORMATIONAL"],
            sum(v for k, v in c.items() if not k.startswith("close ")) - c["OK"] - c["INFORMATIONAL"],
            c["close OK"], c["close INFORMATIONAL"],
            sum(v for k, v in c.items() if k.startswith("close ")) - c["close OK"] - c["close INFORMATIONAL"])
        for sec, c in sorted(rows.items(), key=lambda kv: int(kv[0]))] + ["", "Result: " + summary, ""])
    print(text)
    if os.environ["WRITE_DOC"] == "1":
        base, found = sections(old)
        found[PROXY_HEADER] = text
        write(base, found)
elif os.environ["TLS"] == "1":
    summary = "%d cases, %s; wall time %s s." % (
        total, "every case OK or INFORMATIONAL" if not bad else "%d not OK: %s" % (len(bad), bad),
        os.environ["WALL"])
    text = "\n".join([TLS_HEADER, "",
        "`TLS=1 tests/autobahn.sh`: the same cases against `--tls-self-signed`, with socat as the"
        " TLS client in front of the port (kosoku refuses `wss://` URLs), verifying the"
        " certificate; every byte and each half-close crosses echocast's TLS layer.", "",
        "| Section | Cases | OK | INFORMATIONAL | other | close OK | close INFORMATIONAL | close other |",
        "|---|---|---|---|---|---|---|---|"] + [
        "| %s %s | %d | %d | %d | %d | %d | %d | %d |" % (
            sec, names.get(sec, ""), sum(v for k, v in c.items() if not k.startswith("close ")),
            c["OK"], c["INFORMATIONAL"],
            sum(v for k, v in c.items() if not k.startswith("close ")) - c["OK"] - c["INFORMATIONAL"],
            c["close OK"], c["close INFORMATIONAL"],
            sum(v for k, v in c.items() if k.startswith("close ")) - c["close OK"] - c["close INFORMATIONAL"])
        for sec, c in sorted(rows.items(), key=lambda kv: int(kv[0]))] + ["", "Result: " + summary, ""])
    print(text)
    if os.environ["WRITE_DOC"] == "1":
        base, found = sections(old)
        found[TLS_HEADER] = text
        write(base, found)
else:
    text = "\n".join(lines)
    print(text)
    if os.environ["WRITE_DOC"] == "1":
        _, found = sections(old)
        write(text, found)
if bad:
    sys.exit(1)
PY
