#!/usr/bin/env bash
# Debian 12 has no python3-msgspec (Debian 13 has 0.19.0). This wraps msgspec's PyPI wheel
# for CPython 3.11 in a local package of that name, so that apt can install pymon's package
# with every dependency satisfied:
#   bash scripts/msgspec-deb.sh [VERSION]   ->  dist/deb/python3-msgspec_VERSION-0~pymon1_ARCH.deb
# Needs pip (the set-up's .venv, or Debian's python3-pip).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-0.19.0}   # Debian 13's version
arch=$(dpkg --print-architecture)
pip=(.venv/bin/python -m pip)
[ -x .venv/bin/python ] || pip=(/usr/bin/python3 -m pip)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${pip[@]}" download -q --no-deps --only-binary :all: --python-version 3.11 \
    --implementation cp --abi cp311 --platform "manylinux2014_$(uname -m)" \
    -d "$work/wheel" "msgspec==$version"
root=$work/root
mkdir -p "$root/DEBIAN" "$root/usr/lib/python3/dist-packages" "$root/usr/share/doc/python3-msgspec"
/usr/bin/python3 -m zipfile -e "$work"/wheel/*.whl "$root/usr/lib/python3/dist-packages/"
rm -f "$root"/usr/lib/python3/dist-packages/msgspec-*.dist-info/RECORD
cp "$root"/usr/lib/python3/dist-packages/msgspec-*.dist-info/LICENSE* \
   "$root/usr/share/doc/python3-msgspec/copyright" 2>/dev/null || true
cat > "$root/DEBIAN/control" <<CONTROL
Package: python3-msgspec
Version: $version-0~pymon1
Architecture: $arch
Maintainer: pymon developers <pymon@example.invalid>
Depends: python3 (>= 3.11), python3 (<< 3.12), libc6
Section: python
Priority: optional
Homepage: https://github.com/jcrist/msgspec
Description: msgspec $version from its PyPI wheel, for Debian 12
 Debian 12 has no python3-msgspec; this local package holds the CPython 3.11
 wheel of msgspec so that pymon's package installs with apt. Debian 13 and
 later ship python3-msgspec: use theirs.
CONTROL
# what lintian asks of a binary package: stripped objects, a Debian changelog
strip --strip-unneeded "$root"/usr/lib/python3/dist-packages/msgspec/*.so
printf 'python3-msgspec (%s-0~pymon1) unstable; urgency=medium\n\n  * Local package of the PyPI wheel, for Debian 12.\n\n -- pymon developers <pymon@example.invalid>  %s\n' \
    "$version" "$(date -R)" | gzip -9n > "$root/usr/share/doc/python3-msgspec/changelog.Debian.gz"
mkdir -p dist/deb
dpkg-deb --root-owner-group -Zxz --build "$root" "dist/deb/python3-msgspec_${version}-0~pymon1_${arch}.deb" >/dev/null
ls dist/deb/python3-msgspec_*.deb
