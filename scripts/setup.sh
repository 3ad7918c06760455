#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for pymon: system packages, then a venv in
# .venv with pymon installed editable (its cffi module is compiled here) and the test extra.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(runc busybox-static python3 python3-venv python3-dev gcc tzdata conmon systemd util-linux
          podman)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # with recommends: podman is tested with what they bring (netavark, catatonit, ...)
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's interpreter, not whatever python3 is first on PATH: it is what a packaged pymon
# runs on, and its statically linked libpython starts faster (bench/startup.py).
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# the distribution was called "pymon" before it was renamed: its metadata left in the tree
# by an earlier editable install would still be found on the path
rm -rf pymon.egg-info
.venv/bin/python -m pip install -q -e '.[test,dev]' --config-settings editable_mode=compat
