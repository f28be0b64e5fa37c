#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines
# that reach Debian's mirror but no container registry (bookworm's python3 is 3.11).
#   scripts/build_base_image.sh ENGINE TAG      ENGINE: docker or podman; needs root and debootstrap
# The image has what the Dockerfiles use from the official one: python3 (also as `python`) with
# venv/ensurepip, ca-certificates, apt, and useradd/groupadd.
set -euo pipefail
engine=${1:?usage: build_base_image.sh ENGINE TAG}
tag=${2:?usage: build_base_image.sh ENGINE TAG}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || { echo "build_base_image: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d "${TMPDIR:-/var/tmp}/vla-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >&2
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main
SOURCES
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$root" -c . \
  | "$engine" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >&2
echo "$tag"
