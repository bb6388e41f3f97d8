import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { formatBytes } from '../size-text'

/**
 * The room `logdisk adopt` needs, by filesystem. A copy's adopt writes whole segments (those
 * on the original's pool volumes, taken home) and, for a directory archive, whole archived
 * objects (under the new uuid): on a filesystem too small for them it failed midway with
 * ENOSPC and left the store refused to every command until room was freed, without saying how
 * much (found by a hostile test). So adopt adds up what it will write first and refuses, with
 * nothing changed, when a filesystem lacks room for it.
 */

/** What a filesystem must take: the store's index and small files, whole segments, archived objects. */
export interface RoomShort {
  /** A directory on the filesystem (the first one that needed room there). */
  where: string
  needBytes: number
  freeBytes: number
  /** "10 segment(s) copied home from the original's pool volumes: 20.0 MiB", ... */
  parts: string[]
}

interface Filesystem {
  where: string
  blockBytes: number
  freeBytes: number
  needBytes: number
  parts: Map<string, { files: number, bytes: number, counted: boolean }>
}

export class RoomNeeds {
  private readonly byDevice = new Map<number, Filesystem>()

  /**
   * `bytes` to be written as one file into the directory `where` (an existing directory), for
   * `what`; counted per file (`counted`) in the message ("3 segment(s) ...").
   */
  add (where: string, bytes: number, what: string, counted = true): void {
    const fsys = this.filesystemOf(where)
    if (fsys === undefined) return // unknown: the writes themselves will say
    const rounded = Math.ceil(bytes / fsys.blockBytes) * fsys.blockBytes
    fsys.needBytes += rounded
    const part = fsys.parts.get(what) ?? { files: 0, bytes: 0, counted }
    part.files++
    part.bytes += rounded
    fsys.parts.set(what, part)
  }

  /** Room that is taken now but is given back before adopt writes (a stopped run's half-copied file). */
  credit (where: string, bytes: number): void {
    const fsys = this.filesystemOf(where)
    if (fsys !== undefined) fsys.freeBytes += bytes
  }

  /** The first filesystem without room for what it must take, or undefined when all have it. */
  shortfall (): RoomShort | undefined {
    for (const f of this.byDevice.values()) {
      if (f.needBytes > f.freeBytes) return { where: f.where, needBytes: f.needBytes, freeBytes: f.freeBytes, parts: partsText(f) }
    }
    return undefined
  }

  /** What the filesystem of `where` must take and has (for a message after it ran out). */
  on (where: string): RoomShort | undefined {
    let dev: number
    try { dev = fs.statSync(where).dev } catch { return undefined }
    const f = this.byDevice.get(dev)
    return f === undefined ? undefined : { where: f.where, needBytes: f.needBytes, freeBytes: f.freeBytes, parts: partsText(f) }
  }

  private filesystemOf (where: string): Filesystem | undefined {
    let dev: number
    let s: fs.StatsFs
    try {
      dev = fs.statSync(where).dev
      s = fs.statfsSync(where)
    } catch {
      return undefined
    }
    let f = this.byDevice.get(dev)
    if (f === undefined) {
      f = { where, blockBytes: Math.max(1, s.bsize), freeBytes: s.bavail * s.bsize, needBytes: 0, parts: new Map() }
      this.byDevice.set(dev, f)
    }
    return f
  }
}

function partsText (f: Filesystem): string[] {
  return [...f.parts].filter(([, p]) => p.bytes > 0).map(([what, p]) => p.counted ? `${p.files} ${what}: ${formatBytes(p.bytes)}` : `${what}: ${formatBytes(p.bytes)}`)
}

/** How much more room `short` needs (at least one byte: it ran out). */
export function moreBytes (short: RoomShort): number {
  return Math.max(1, short.needBytes - short.freeBytes)
}

/**
 * The refusal before anything is written. `resuming`: adopt.json is there from a run that
 * stopped ('staging': nothing of the store has changed; 'committing': the store is refused
 * to every other command until adopt finishes).
 */
export function roomRefusal (dir: string, short: RoomShort, resuming?: 'staging' | 'committing'): LogdiskError {
  const head = resuming === undefined ? `cannot adopt ${dir}` : `cannot finish the adopt of ${dir}`
  const tail = resuming === undefined
    ? 'nothing was changed (read-only commands work as is)'
    : resuming === 'staging'
      ? 'nothing of the store has changed yet (read-only commands work as is)'
      : 'until it is finished every other command refuses the store'
  return new LogdiskError('NO_SPACE', `${head}: it needs ${formatBytes(short.needBytes)} free on the filesystem of ${short.where} (${short.parts.join('; ')}) and that has ${formatBytes(short.freeBytes)} free: free ${formatBytes(moreBytes(short))} more and run logdisk adopt ${dir} again; ${tail}`)
}

/**
 * The error when the room went while adopt wrote (another program took it): how much more it
 * needs for what is left, and that running it again goes on where it stopped.
 */
export function ranOutError (dir: string, doing: string, short: RoomShort, changed: boolean, cause: unknown): LogdiskError {
  const tail = changed
    ? 'until it is finished every other command refuses the store'
    : 'nothing of the store has changed yet (read-only commands work as is)'
  return new LogdiskError('NO_SPACE', `the adopt of ${dir} stopped: the filesystem of ${short.where} ran out of room while it ${doing}: it needs ${formatBytes(moreBytes(short))} more: ${formatBytes(short.needBytes)} still to write (${short.parts.join('; ')}) and ${formatBytes(short.freeBytes)} free; free that much and run logdisk adopt ${dir} again: it goes on where it stopped; ${tail}`, cause)
}

/** Whether `err` (or what caused it) is the operating system saying a filesystem is full. */
export function isNoSpace (err: unknown): boolean {
  for (let e = err as { code?: unknown, cause?: unknown, message?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 8; e = e.cause as typeof e, depth++) {
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'NO_SPACE') return true
  }
  return false
}

/** The block usage of the files `names` in `dir` (what removing them gives back). */
export function allocatedBytes (dir: string, names: string[]): number {
  let total = 0
  for (const n of names) {
    try { total += fs.statSync(path.join(dir, n)).blocks * 512 } catch { /* gone */ }
  }
  return total
}
