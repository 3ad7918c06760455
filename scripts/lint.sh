#!/usr/bin/env bash
# ruff (rules in pyproject.toml) on the whole tree, then mypy --strict on pymon/.
# Run after scripts/setup.sh, which installs both (pinned, the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/mypy
