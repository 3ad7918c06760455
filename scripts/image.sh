#!/usr/bin/env bash
# Import a tiny local image, localhost/busybox, from Debian's busybox-static (installed by
# scripts/setup.sh): for trying pymon with podman on a machine without a registry.
# Safe to run again: an existing image is kept.
set -euo pipefail
podman image exists localhost/busybox && exit 0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
tar -C "$root" -c . | podman import --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' - localhost/busybox >/dev/null 2>&1
echo "imported localhost/busybox"
