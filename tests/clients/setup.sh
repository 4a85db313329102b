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
