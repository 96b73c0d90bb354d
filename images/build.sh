#!/usr/bin/env bash
# `make images`: build the flows and metrics-exporter images with rootful podman, without Docker Hub, then
# start each one and check it (images/check.py). The base is Debian bookworm made with debootstrap from
# Debian's mirror; Python packages come from the Python index through the machine's CA bundle, mounted
# into the builds. Needs root (installs podman, buildah, debootstrap and runc from Debian when missing).
# The trainer image is not built here: its CUDA base and CUDA torch index are not reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/images/containers.conf"
PYTHON="${PYTHON:-.venv/bin/python}"
CA="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
ROOTFS_IMAGE=localhost/gpuflows/debian-rootfs:bookworm
BASE_IMAGE=localhost/gpuflows/python:3.11-bookworm
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
BUILD=(podman build --format docker --network host -v "$CA:/etc/ssl/certs/ca-certificates.crt:ro")

step() { printf '%s %s\n' "$(date +%T)" "$*"; }
timed() { local began=$SECONDS; "$@"; echo "$((SECONDS - began))"; }

if [ "$(id -u)" != 0 ]; then echo "make images: needs root (rootful podman)" >&2; exit 1; fi
missing=()
for tool in podman buildah debootstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah debootstrap runc >/dev/null
fi

declare -A seconds
if ! podman image exists "$ROOTFS_IMAGE"; then
  step "debootstrap bookworm (minbase, python3, python3-venv, ca-certificates)"
  rootfs=$(mktemp -d /tmp/gpuflows-rootfs-XXXXXX)
  began=$SECONDS
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | podman import -q - "$ROOTFS_IMAGE" >/dev/null
  rm -rf "$rootfs"
  seconds[rootfs]=$((SECONDS - began))
else
  seconds[rootfs]="cached"
fi
step "base $BASE_IMAGE"
seconds[base]=$(timed "${BUILD[@]}" -q -t "$BASE_IMAGE" -f images/base/Dockerfile images/base | tail -1)
for image in metrics-exporter flows; do
  step "image localhost/gpuflows/$image:$VERSION"
  seconds[$image]=$(timed "${BUILD[@]}" -q --build-arg BASE="$BASE_IMAGE" \
    -t "localhost/gpuflows/$image:$VERSION" -f "images/$image/Dockerfile" . | tail -1)
done

step "checking the images by starting them"
FLOWS_IMAGE="localhost/gpuflows/flows:$VERSION" EXPORTER_IMAGE="localhost/gpuflows/metrics-exporter:$VERSION" \
  "$PYTHON" images/check.py

echo
echo "| image | build s | size |"
echo "|---|---|---|"
echo "| debian-rootfs (debootstrap + import) | ${seconds[rootfs]} | $(podman image inspect --format '{{.Size}}' "$ROOTFS_IMAGE" | numfmt --to=iec) |"
echo "| python base | ${seconds[base]} | $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec) |"
for image in metrics-exporter flows; do
  size=$(podman image inspect --format '{{.Size}}' "localhost/gpuflows/$image:$VERSION" | numfmt --to=iec)
  echo "| $image | ${seconds[$image]} | $size |"
done
