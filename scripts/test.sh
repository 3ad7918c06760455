#!/usr/bin/env bash
# The checks and the whole test suite on a fresh machine: set-up, ruff and mypy, then pytest
# (unit, integration with real runc, podman end-to-end). Must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
exec .venv/bin/python -m pytest -q tests "$@"
