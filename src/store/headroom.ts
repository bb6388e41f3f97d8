/**
 * What a volume without a declared capacity leaves free on its filesystem: 2% of it, at least
 * 256 MiB (or a tenth of a small one). Its capacity was all the free space, so the log filled
 * the filesystem to its last byte (measured: 79 GiB of segments on this machine's root), and
 * then nothing could be written there: not the index beside the segments, not the daemon's
 * log, not another program's files. The pool now says NO_SPACE first, while the store and
 * its neighbours can still write (ZFS keeps a "slop" of 1/32 of a pool for the same reason).
 * Never less than 8 MiB (or half a small filesystem): a command that writes refuses to run
 * below 4 MiB free (store-access.ts), and a 4 MiB headroom on a 40 MiB filesystem, less what
 * the index's checkpoints took from it, left a store that could not be mounted again (a
 * hostile test, helper-56); twice that leaves the index room to grow.
 */
export function filesystemHeadroom (filesystemBytes: number): number {
  // Whole bytes: capacities derived from it are printed (pool list --json) and compared.
  return Math.ceil(Math.max(HEADROOM_FRACTION * filesystemBytes, Math.min(HEADROOM_MIN_BYTES, filesystemBytes / 10), Math.min(HEADROOM_FLOOR_BYTES, filesystemBytes / 2)))
}

const HEADROOM_FRACTION = 0.02
const HEADROOM_MIN_BYTES = 256 * 1024 * 1024
const HEADROOM_FLOOR_BYTES = 8 * 1024 * 1024
