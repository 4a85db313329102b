#!/usr/bin/env bash
# The image as users get it (issue 17): packaging/container.sh builds the
# static binary and the FROM scratch image with podman; then the image's own
# settings are checked (non-root user, port 9001 exposed, a HEALTHCHECK, size
# under 10 MB), its root filesystem exported, and its entrypoint + command run
# in a chroot of it as the image's user (running a container does not work
# on these machines: cgroups). The server must come up on 0.0.0.0:9001,
# answer /healthz, echo a message from a real client, and the image's
# HEALTHCHECK command must exit 0, then 1 once the server is stopped.
# It runs in a network namespace of its own when it can, so port 9001 on the
# machine is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "${1:-}" != --inside ]; then
  command -v podman >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq podman >/dev/null
  }
  EXTRA_PY= source tests/clients/setup.sh   # $venv with Python websockets
  tag=echocast:ci-$$
  work=$(mktemp -d)
  cleanup() { podman rm -f "${cid:-none}" >/dev/null 2>&1 || true; podman rmi -f "$tag" >/dev/null 2>&1 || true; rm -rf "$work"; }
  trap cleanup EXIT
  packaging/container.sh "$tag" >/dev/null
  bin=target/x86_64-unknown-linux-gnu/release/echocast
  file "$bin" | tee "$work/file"
  grep -q 'static' "$work/file" || { echo "FAIL: the binary is not statically linked"; exit 1; }
  inspect=$(podman image inspect "$tag")
  config=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0]["Config"]))' "$inspect")
  health=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0].get("Healthcheck")))' "$inspect")
  size=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0]["Size"])' "$inspect")
  echo "image $tag: $size bytes; config $config; healthcheck $health"
  CONFIG=$config HEALTH=$health SIZE=$size python3 - <<'PY'
import json, os
c = json.loads(os.environ["CONFIG"]); h = json.loads(os.environ["HEALTH"])
user = c.get("User", "")
assert user and user.split(":")[0] not in ("", "0", "root"), f"runs as root: {user!r}"
assert "9001/tcp" in c.get("ExposedPorts", {}), c
assert c["Entrypoint"] == ["/echocast"], c
assert h and h["Test"] == ["CMD", "/echocast", "health"], h
assert int(os.environ["SIZE"]) < 10_000_000, os.environ["SIZE"]
PY
  cid=$(podman create "$tag")
  mkdir "$work/rootfs"
  podman export "$cid" | tar -x -C "$work/rootfs"
  echo "root filesystem: $(cd "$work/rootfs" && find . -mindepth 1 | tr '\n' ' ')"
  # The image's own entrypoint, command, user and health check, as data.
  python3 - "$config" "$health" >"$work/run.env" <<'PY'
import json, shlex, sys
c = json.loads(sys.argv[1]); h = json.loads(sys.argv[2])
print("cmdline=(" + " ".join(shlex.quote(a) for a in c["Entrypoint"] + c["Cmd"]) + ")")
print("userspec=" + shlex.quote(c["User"]))
print("healthcmd=(" + " ".join(shlex.quote(a) for a in h["Test"][1:]) + ")")
PY
  if unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    exec unshare -n "$0" --inside "$work" "$venv"
  fi
  "$0" --inside "$work" "$venv"
  exit
fi

# --inside WORK VENV: run the image's entrypoint in a chroot of its root.
work=$2 venv=$3
[ -n "$(ip -o link show lo 2>/dev/null)" ] && ip link set lo up 2>/dev/null || true
# shellcheck disable=SC1091
source "$work/run.env"
echo "running as $userspec in chroot: ${cmdline[*]}"
chroot --userspec="$userspec" "$work/rootfs" "${cmdline[@]}" >"$work/stdout" 2>"$work/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q '^listening on' "$work/stdout" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "FAIL: the server exited"; cat "$work/stderr"; exit 1; }
  sleep 0.1
done
line=$(head -n1 "$work/stdout")
echo "$line"
[ "$line" = "listening on ws://0.0.0.0:9001" ] || { echo "FAIL: expected every interface on 9001"; exit 1; }
# The server says nothing above info about listening on every interface:
# in a container that is the point, not a warning.
if grep -q WARN "$work/stderr"; then echo "FAIL: warnings at start:"; cat "$work/stderr"; exit 1; fi
chroot --userspec="$userspec" "$work/rootfs" "${healthcmd[@]}" || { echo "FAIL: health check"; exit 1; }
# Name resolution needs no NSS files: `localhost` resolves in the empty root.
chroot --userspec="$userspec" "$work/rootfs" /echocast health localhost:9001 >/dev/null ||
  { echo "FAIL: localhost does not resolve in the image"; exit 1; }
curl -fsS http://127.0.0.1:9001/healthz | grep -qx ok
"$venv/bin/python" - <<'PY'
from websockets.sync.client import connect
with connect("ws://127.0.0.1:9001/") as ws:
    ws.send("hello from the image's test")
    assert ws.recv(timeout=5) == "hello from the image's test"
    ws.send(b"\x00\x01binary")
    assert ws.recv(timeout=5) == b"\x00\x01binary"
print("echo ok")
PY
kill -TERM $pid
wait $pid || { echo "FAIL: the server did not exit 0 on SIGTERM"; exit 1; }
if chroot --userspec="$userspec" "$work/rootfs" "${healthcmd[@]}" 2>"$work/health.err"; then
  echo "FAIL: health check passed with the server stopped"; exit 1
fi
echo "stopped: $(cat "$work/health.err")"
echo "container: ok"
