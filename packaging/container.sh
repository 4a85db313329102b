#!/usr/bin/env bash
# Builds the static echocast (packaging/static.sh) and an image FROM scratch
# holding only it (packaging/Containerfile), with podman or docker, whichever
# is installed (ENGINE=docker to choose). Prints the tag.
#
#   packaging/container.sh              # -> echocast:latest
#   packaging/container.sh echocast:dev
#   docker run --rm -p 9001:9001 echocast:latest
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-echocast:latest}
engine=${ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else echo "container.sh: neither podman nor docker is installed" >&2; exit 1
  fi
fi
bin=$(packaging/static.sh)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/echocast"
cp packaging/Containerfile "$ctx/Containerfile"
# podman keeps HEALTHCHECK only in the docker image format.
format=()
[ "$engine" = podman ] && format=(--format docker)
"$engine" build --quiet "${format[@]}" -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "$tag"
