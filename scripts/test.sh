#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then pytest (unit, integration with
# real runc). Must run as root. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q tests "$@"
