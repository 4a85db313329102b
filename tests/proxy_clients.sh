#!/usr/bin/env bash
# The proxy (docs/proxy.md) between real servers and clients that are not
# echocast: Python websockets on both sides (tests/clients/proxy.py: sizes to
# 16 MiB with deflate on each leg, the upstream's subprotocol and 401, closes
# both ways, the inspector's linked legs, the upstream killed: 1014, then 502)
# and Node ws on both sides (tests/clients/proxy.js); then record and replay:
# a real graphql-ws server recorded through --proxy --record, then answered by
# --stubs alone to the same client, with its new ids
# (tests/clients/record_graphql.js). Installs websockets and Node ws when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/clients/setup.sh
. tests/clients/setup.sh
timeout 180 "$venv/bin/python" tests/clients/proxy.py target/release/echocast
timeout 180 node tests/clients/proxy.js target/release/echocast
timeout 180 node tests/clients/record_graphql.js target/release/echocast
