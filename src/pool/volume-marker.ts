import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { writeFileAtomic } from '../store/config'
import { withLockFileSync } from '../store/lock-file'
import { makeDirs } from '../make-dirs'

/**
 * A pool volume is a directory with a marker file naming it and saying who may use it:
 * assigned to one store (by the store's uuid) or spare. Several stores may list the same
 * directory in their pools; the marker, changed under a lock file, decides who has it
 * (seed 002: volumes allocated to a virtual volume on demand and released to the pool).
 */
export interface VolumeMarker {
  id: string
  /** Bytes this volume may hold; null: the free space of its filesystem. */
  capacityBytes: number | null
  assignedTo: string | null
  changedAt: string
}

export const MARKER_FILE = '.logdisk-volume.json'
const LOCK_FILE = '.logdisk-volume.lock'
const STALE_LOCK_MS = 30_000

export function readMarker (dir: string): VolumeMarker | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MARKER_FILE), 'utf8')) as VolumeMarker
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new LogdiskError('BAD_CONFIG', `pool volume ${dir}: unreadable ${MARKER_FILE}: ${(err as Error).message}`, err)
  }
}

/** Why a listed volume is not there as itself (missingReason). */
export type MissingReason = { kind: 'directory-gone' } | { kind: 'marker-gone' } | { kind: 'marker-garbled' } | { kind: 'another-volume', id: string }

/**
 * Why a volume a store lists by `id` is not there as that volume: its directory gone, its
 * marker gone, unreadable or naming another volume. Undefined when it is there.
 */
export function missingReason (dir: string, id: string): MissingReason | undefined {
  if (!fs.existsSync(dir)) return { kind: 'directory-gone' }
  let marker
  try { marker = readMarker(dir) } catch {
    return { kind: 'marker-garbled' }
  }
  if (!marker) return { kind: 'marker-gone' }
  return marker.id === id ? undefined : { kind: 'another-volume', id: marker.id }
}

/**
 * Makes `dir` a pool volume (or reads the one that is there); capacity is updated if given.
 * `id`: the id a store's pool.json knows the volume by, reused when the marker is gone (a
 * lost directory recreated and added again is the same volume, its segment copies lost) or
 * unreadable (set aside as `<marker>.unreadable-<time>`, for the user to look at: `pool add`
 * could not remake a garbled marker, and the volume stayed "missing" for good).
 */
export function ensureMarker (dir: string, capacityBytes: number | null | undefined, id?: string, onSetAside?: (file: string) => void): VolumeMarker {
  try {
    makeDirs(dir)
  } catch (err) {
    throw new LogdiskError('IO', `cannot create pool volume directory ${dir}: ${(err as Error).message}`, err)
  }
  return withLock(dir, () => {
    let existing: VolumeMarker | undefined
    try {
      existing = readMarker(dir)
    } catch (err) {
      if (id === undefined) throw err // not this store's volume: not ours to remake
      const aside = path.join(dir, `${MARKER_FILE}.unreadable-${Date.now()}`)
      fs.renameSync(path.join(dir, MARKER_FILE), aside)
      onSetAside?.(aside)
    }
    const marker: VolumeMarker = existing ?? { id: id ?? crypto.randomUUID(), capacityBytes: null, assignedTo: null, changedAt: new Date().toISOString() }
    if (capacityBytes !== undefined) marker.capacityBytes = capacityBytes
    if (!existing || capacityBytes !== undefined) write(dir, marker)
    return marker
  })
}

/** Assigns the volume to `owner` if it is spare (or already the owner's); returns whether it is now the owner's. */
export function claim (dir: string, owner: string): boolean {
  return withLock(dir, () => {
    const marker = readMarker(dir)
    if (!marker) return false
    if (marker.assignedTo !== null && marker.assignedTo !== owner) return false
    if (marker.assignedTo !== owner) write(dir, { ...marker, assignedTo: owner, changedAt: new Date().toISOString() })
    return true
  })
}

/** Gives the volume back to the pool as a spare, if `owner` has it. */
export function release (dir: string, owner: string): void {
  withLock(dir, () => {
    const marker = readMarker(dir)
    if (marker?.assignedTo === owner) write(dir, { ...marker, assignedTo: null, changedAt: new Date().toISOString() })
  })
}

function write (dir: string, marker: VolumeMarker): void {
  writeFileAtomic(path.join(dir, MARKER_FILE), JSON.stringify(marker, null, 2) + '\n')
}

/**
 * Marker changes by two stores never interleave: they hold the volume's lock file
 * (lock-file.ts). One left by a process killed while it held it (kill -9 in a pool remove) is
 * taken back at once when that process is gone from this host, instead of after
 * STALE_LOCK_MS with an error blaming "another store" (found by a hostile test); one of
 * another host's after STALE_LOCK_MS.
 */
function withLock<T> (dir: string, fn: () => T): T {
  const lock = path.join(dir, LOCK_FILE)
  return withLockFileSync(lock, fn, {
    waitMs: 5_000,
    pollMs: 20, // marker changes are rare and short
    unverifiableStaleMs: STALE_LOCK_MS,
    busyMessage: who => `pool volume ${dir} is locked by ${who}, which is changing its marker (${lock}); try again (a lock left by a process that died clears at once on its host, after ${STALE_LOCK_MS / 1000} s elsewhere)`,
    failMessage: err => `pool volume ${dir}: cannot take its lock: ${err.message}`
  })
}

/** Hands the volume from store `from` to store `to` (logdisk adopt of the store that has it); false if `from` does not have it. */
export function reassign (dir: string, from: string, to: string): boolean {
  return withLock(dir, () => {
    const marker = readMarker(dir)
    if (marker?.assignedTo === to) return true
    if (marker?.assignedTo !== from) return false
    write(dir, { ...marker, assignedTo: to, changedAt: new Date().toISOString() })
    return true
  })
}
