#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for pymon: system packages, then a venv in
# .venv with pymon installed editable (its cffi module is compiled here) and the test and
# dev extras. Safe to run again: apt and pip skip what is already there.
#   bash scripts/setup.sh           set up
#   bash scripts/setup.sh --undo    remove .venv, dist/ and the Debian packages this script
#                                   installed (recorded in .setup-installed; packages that
#                                   were already there are left alone)
set -euo pipefail
cd "$(dirname "$0")/.."

RECORD=.setup-installed
if [ "${1:-}" = "--undo" ]; then
  rm -rf .venv dist pymon_conmon.egg-info
  if [ -s "$RECORD" ]; then
    # shellcheck disable=SC2046
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq $(cat "$RECORD") >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get autoremove -y -qq >/dev/null
  fi
  rm -f "$RECORD"
  echo "set-up undone"
  exit 0
fi

# runc and podman to run containers, busybox-static for test images, conmon to compare
# against (bench/), gcc and python3-dev to compile pymon's cffi module, musl-tools to link
# the launcher against musl (pymon/launcher/build.py says why), systemd for journald in the
# logging tests, util-linux for unshare/nsenter, tzdata for log timestamps, strace for a
# test that sees a call no timing can show reliably (the monitor's yield after the pid).
PACKAGES=(runc busybox-static python3 python3-venv python3-dev gcc musl-tools tzdata conmon systemd
          util-linux podman strace)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # with recommends: podman is tested with what they bring (netavark, catatonit, ...)
  apt-get install -y -qq "${missing[@]}" >/dev/null
  printf '%s\n' "${missing[@]}" >> "$RECORD"
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
