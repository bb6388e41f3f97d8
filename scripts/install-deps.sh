#!/usr/bin/env bash
# Installs the Debian packages logdisk needs, only those missing. `test` is what mounts and
# tests need (fio drives live writes in some; Ceph's monitor, OSD and object gateway give the
# archive and lease tests a real S3 server: test/helpers/ceph.ts); `bench` adds the qcow2 peer
# (qemu-storage-daemon). gcc and libc6-dev build the native addons (page-cache, block-crc: scripts/build-native.mjs).
set -euo pipefail
want=(libfuse2 fuse e2fsprogs util-linux xfsprogs mount fio python3 systemd gcc libc6-dev)
# Without recommends: 51 packages, about 58 MiB to download, 27 s to install here (with them,
# 100 packages); start-rgw.sh needs nothing more.
ceph=(ceph-mon ceph-osd radosgw ceph-common)
[ "${1:-test}" = bench ] && want+=(qemu-system-common qemu-utils)
missing_of() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
  done
}
mapfile -t missing < <(missing_of "${want[@]}")
mapfile -t missing_ceph < <(missing_of "${ceph[@]}")
[ ${#missing[@]} -eq 0 ] && [ ${#missing_ceph[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "logdisk needs these packages (or your system's equivalent): ${missing[*]} ${missing_ceph[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]} ${missing_ceph[*]}"
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#missing_ceph[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing_ceph[@]}" >/dev/null
fi
