#!/usr/bin/env bash
# Demo on a fresh machine (as root): set up, then run a busybox container under pymon the
# way podman does (scripts/demo.py) and show the container's log and its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py
