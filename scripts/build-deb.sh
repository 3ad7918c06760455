#!/usr/bin/env bash
# Build the Debian package from this tree (as root on Debian 12 or 13):
#   bash scripts/build-deb.sh      ->  dist/deb/pymon_VERSION_ARCH.deb
# Installs the Build-Depends of packaging/debian/control, copies the tracked (and new,
# unignored) files to dist/deb/src so the build's products stay out of the tree, and runs
# dpkg-buildpackage there. Plain `ln -s packaging/debian debian && dpkg-buildpackage -us -uc -b`
# in a clone works too; it writes the .deb into the clone's parent directory.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
# Debian's interpreter and tools only: a python3 earlier on PATH (pyenv, a venv) lacks the
# Debian modules pybuild uses.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
deps=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' packaging/debian/control | sed '1s/^Build-Depends://;$d' \
       | tr ',' '\n' | sed 's/(.*)//; s/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$')
missing=()
for p in $deps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
dpkg-query -W -f='${Status}' dpkg-dev 2>/dev/null | grep -q "install ok installed" || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

out=dist/deb
rm -rf "$out" && mkdir -p "$out/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$out/src"
ln -s packaging/debian "$out/src/debian"
(cd "$out/src" && dpkg-buildpackage -us -uc -b)
ls "$out"/*.deb
