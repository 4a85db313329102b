# Sourced (from the repository root) by tests/*_clients.sh: sets $venv (.venv,
# or $KOSOKU_VENV) with Python websockets plus the modules named in
# $EXTRA_PY, installs Node ws under tests/clients/node_modules, and builds the
# release binary. Installs only what is missing.
# shellcheck shell=bash
venv=${KOSOKU_VENV:-$PWD/.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/python" -c "import websockets${EXTRA_PY:+, ${EXTRA_PY// /, }}" 2>/dev/null ||
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'websockets>=14' ${EXTRA_PY:-}
[ -d tests/clients/node_modules/ws ] && [ -d tests/clients/node_modules/graphql-ws ] ||
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
cargo build --release --quiet --bin echocast

# Starts the release binary with a self-signed certificate on a free port,
# with any further flags given: sets $dir (a temporary directory holding
# cert.pem, the server's stdout in out and its log in log, removed on exit),
# $pid and $addr (127.0.0.1:PORT from its "listening on" line).
start_tls_server() {
  dir=$(mktemp -d)
  target/release/echocast --listen 127.0.0.1:0 --tls-self-signed --tls-cert-out "$dir/cert.pem" \
    "$@" >"$dir/out" 2>"$dir/log" &
  pid=$!
  trap 'kill $pid $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
  for _ in $(seq 100); do grep -q listening "$dir/out" && break; sleep 0.05; done
  addr=$(sed -n 's/^listening on wss:\/\///p' "$dir/out")
  [ -n "$addr" ] || { echo "$0: no 'listening on wss://' line"; cat "$dir/out" "$dir/log"; exit 1; }
}
