#!/usr/bin/env bash
# The README's 5-minute walk-through as a script: create a store, mount it, attach a
# direct-I/O loop device to current.img, put ext4 on it, copy files, unmount everything,
# remount and check the files (with `mount -o loop`, the simple way, this time).
# Run as root from the checkout after `make build`:  bash examples/walkthrough.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/logdisk-walkthrough.XXXXXX)}
logdisk() { node dist/src/cli/main.js "$@"; }
cleanup() {
  mountpoint -q "$work/fs" && umount "$work/fs"
  # Only loop devices over this walk-through's image: a /dev/loopN detached above may
  # already serve someone else.
  for d in $(losetup -j "$work/mnt/current.img" -O NAME -n 2>/dev/null); do logdisk detach "$d" || true; done
  grep -qs " $work/mnt fuse.logdisk " /proc/mounts && logdisk unmount "$work/mnt"
  true
}
trap cleanup EXIT

logdisk create "$work/store" --size 1G              # a 1 GiB virtual disk (sparse: uses ~nothing)
logdisk mount "$work/store" "$work/mnt"             # shows $work/mnt/current.img
dev=$(logdisk attach "$work/mnt")                   # a loop device with direct I/O over current.img
mkfs.ext4 -q -F "$dev"                              # any filesystem works; ext4 here
mkdir -p "$work/fs"
mount "$dev" "$work/fs"
cp -a /usr/share/doc "$work/fs/doc"                 # use it with ordinary tools
(cd /usr/share/doc && find . -type f -exec sha256sum {} + | sort -k2) > "$work/before.sha"
sync
umount "$work/fs"
logdisk detach "$dev"
logdisk status "$work/store"                        # bytes written, segments, index position
logdisk unmount "$work/mnt"

logdisk mount "$work/store" "$work/mnt"             # everything is still there after a remount
mount -o loop,ro "$work/mnt/current.img" "$work/fs"  # mount -o loop works too (buffered: slower)
(cd "$work/fs/doc" && find . -type f -exec sha256sum {} + | sort -k2) > "$work/after.sha"
umount "$work/fs"
cmp "$work/before.sha" "$work/after.sha" && echo "all $(wc -l < "$work/after.sha") files read back identical"
e2fsck -fn "$work/mnt/current.img" | tail -1
logdisk unmount "$work/mnt"
logdisk verify "$work/store"
