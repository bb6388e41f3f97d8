import fs from 'node:fs'
import { ROOM_FOR_FLUSH } from './index-write-guard'

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

/**
 * What a filesystem holding the store's index keeps free besides: the room the index write
 * guard waits for before it writes again after a failed write (ROOM_FOR_FLUSH: a memtable's
 * table and a new log, twice over), and as much again for LevelDB's own work (a compaction of
 * its tables writes the new ones before it deletes the old, a checkpoint's batches grow its log
 * meanwhile). With segments and index on one filesystem and only the plain headroom (8 MiB on a
 * 40-48 MiB one), the log's appends took the room the index needed: after an index write
 * failed for room the guard refused index writes until 16 MiB were free, compaction (which
 * needs index writes) freed nothing, the log ate whatever room came back, and after a kill -9
 * the store could not even be opened (helper-97 D3). The log's new segments now fail NO_SPACE
 * (ENOSPC at the FUSE edge) before the filesystem falls under it.
 */
export const INDEX_RESERVE_BYTES = ROOM_FOR_FLUSH + 8 * 1024 * 1024

/** filesystemHeadroom, and at least INDEX_RESERVE_BYTES when the filesystem holds the store's index (`holdsIndex`). */
export function headroomOf (filesystemBytes: number, holdsIndex: boolean): number {
  const plain = filesystemHeadroom(filesystemBytes)
  return holdsIndex ? Math.max(plain, INDEX_RESERVE_BYTES) : plain
}

/** Whether `dir` and `indexDir` lie on one filesystem (unknown, when either cannot be asked: yes). */
export function holdsIndex (dir: string, indexDir: string): boolean {
  try {
    return fs.statSync(dir).dev === fs.statSync(indexDir).dev
  } catch {
    return true
  }
}
