#!/usr/bin/env bash
# The suite on the oldest dependency versions pyproject.toml allows (its floors): Debian 12's
# trio 0.22.0 and cffi 1.15.1, msgspec 0.18.0. Runs in a copy of the tree (dist/floor) with
# its own .venv, so the in-tree cffi module of the main .venv is not rebuilt under it.
#   bash scripts/test-floor.sh [pytest args]    (default: tests/unit tests/integration)
# Run after scripts/setup.sh (system packages); as root for the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOORS=(trio==0.22.0 cffi==1.15.1 msgspec==0.18.0)

dir=dist/floor
rm -rf "$dir" && mkdir -p "$dir"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dir"
cd "$dir"
/usr/bin/python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# build with the floor cffi too (no build isolation), so the module matches its backend
.venv/bin/python -m pip install -q "setuptools>=77" wheel "${FLOORS[@]}"
.venv/bin/python -m pip install -q --no-build-isolation -e '.[test]' "${FLOORS[@]}" \
    --config-settings editable_mode=compat
.venv/bin/python -m pip list 2>/dev/null | grep -iE '^(trio|cffi|msgspec) '
[ $# -gt 0 ] || set -- tests/unit tests/integration
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
