#!/usr/bin/env bash
# Installs the Debian packages logdisk needs, only those missing. `test` is what mounts and
# tests need (fio drives live writes in some); `bench` adds the qcow2 peer (qemu-storage-daemon).
set -euo pipefail
want=(libfuse2 fuse e2fsprogs util-linux mount fio)
[ "${1:-test}" = bench ] && want+=(qemu-system-common qemu-utils)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "logdisk needs these packages (or your system's equivalent): ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
