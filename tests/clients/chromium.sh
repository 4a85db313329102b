# Sourced by tests/browser.sh and tests/docs.sh: installs Debian's chromium
# and chromium-driver when they are missing (needs root, as in CI).
# shellcheck shell=bash
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi
