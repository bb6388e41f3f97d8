import path from 'node:path'
import { LogdiskError } from '../errors'
import { crc32c } from './crc'
import { readUpTo, type FileHandle, type FileLayer } from './file-layer'
import { silentLogger, type Logger } from './logger'
import { MirroredHandle } from './mirrored-handle'
import { earlierFailure } from './writeback-guard'
import type { SegmentHome } from './segment-home'
import { SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, segmentFileName } from './format'

/**
 * One equal-size log file (004 cl. 6, 8). Its first page is a header naming the store, the
 * segment id and the geometry, so a stray or misplaced file is never read as part of a log:
 *
 *   0 magic (16)  16 u32 version  20 u32 blockBytes  24 u64 segmentBytes  32 u64 segmentId
 *   40 u64 createdMs  48 store uuid (16 bytes)  64 u32 CRC32C of bytes [0, 64)
 *
 * Entries follow from SEGMENT_HEADER_BYTES. A log position is segmentId * segmentBytes +
 * offset in the file, so positions grow with time across segments.
 */
export interface SegmentGeometry {
  uuid: string
  blockBytes: number
  segmentBytes: number
}

export class Segment {
  /** Offset in the file where the next entry goes. */
  tail: number
  /** Bytes written since the last datasync. */
  unsynced = false
  /** Settles (never rejects) when the datasync now running ends. */
  private syncing: Promise<void> | undefined
  /**
   * The error of a failed fdatasync, kept: Linux reports a failed write-back once and marks
   * the pages clean, so a later fdatasync would succeed without writing them (PostgreSQL's
   * "fsyncgate", https://wiki.postgresql.org/wiki/Fsync_Errors). No later sync of this
   * segment may then say its writes are durable: every one fails, until the store is opened
   * again (recovery writes the entries no flush covered again before it syncs them).
   */
  private writebackFailed: unknown

  /** An fdatasync of this segment failed (see writebackFailed): no later sync succeeds. */
  get failedWriteback (): boolean {
    return this.writebackFailed !== undefined
  }
  /**
   * A segment made ahead unsynced (`create` with `durable: false`): the directory of each
   * copy by volume, to fsync with the first `sync`, so that the file's name is as durable as
   * its data.
   */
  private unsyncedDirs: { layer: FileLayer, dirs: Map<string, string> } | undefined

  private constructor (readonly id: number, readonly file: string, readonly handle: FileHandle, private readonly volumeList: string[], tail: number) {
    this.tail = tail
  }

  /** The pool volumes holding a copy of this segment right now. */
  get volumes (): string[] {
    return this.handle instanceof MirroredHandle ? this.handle.volumes : this.volumeList
  }

  /**
   * Creates the segment on each of `volumes` (one copy each), header written. `durable`
   * (the default): header and name synced before it returns. Otherwise nothing is synced and
   * the segment starts `unsynced`: its first `sync` (a flush, a checkpoint; both run before
   * anything durable may name it) syncs the header with the data and then each directory.
   * A segment made ahead of a roll is made that way: under sequential writes its fdatasync and
   * directory fsync queued behind the kernel's writeback of the segment filling, 11-105 ms,
   * and the roll waited for them. A crash before that first sync leaves a file past the log's
   * end with no entry and at most a header, or none: recovery removes it (recovery.ts).
   */
  static async create (layer: FileLayer, home: SegmentHome, volumes: string[], id: number, geometry: SegmentGeometry, log: Logger = silentLogger, onDropped?: (volume: string) => void, durable = true): Promise<Segment> {
    const copies = []
    // One header for every copy: encoded per copy, each took its own clock reading
    // (createdMs), so two copies of one segment could differ in their first page, and a
    // repair copying one of them changed the bytes the other had (simulation seed 7020).
    const header = encodeSegmentHeader(id, geometry)
    try {
      for (const volume of volumes) {
        const dir = home.dirOf(volume)
        await layer.mkdirp(dir)
        const file = path.join(dir, segmentFileName(id))
        const handle = await layer.open(file, true)
        copies.push({ volume, file, handle })
        await handle.truncate(0)
        await handle.writev([header], 0)
        if (durable) {
          await handle.datasync()
          await layer.syncDir(dir)
        }
      }
    } catch (err) {
      for (const c of copies) await c.handle.close().catch(() => undefined)
      throw err
    }
    const handle = copies.length === 1 ? copies[0].handle : new MirroredHandle(copies, log, onDropped)
    const segment = new Segment(id, copies[0].file, handle, volumes, SEGMENT_HEADER_BYTES)
    if (!durable) {
      segment.unsynced = true
      segment.unsyncedDirs = { layer, dirs: new Map(volumes.map(v => [v, home.dirOf(v)])) }
    }
    return segment
  }

  /**
   * Opens an existing segment from the copies on `volumes` whose header checks out; `tail` is
   * the file size until the caller's scan says where entries end. Throws CORRUPT naming the
   * first problem when no copy is usable (a missing pool directory names that directory).
   */
  static async open (layer: FileLayer, home: SegmentHome, volumes: string[], id: number, geometry: SegmentGeometry, log: Logger = silentLogger, onDropped?: (volume: string) => void): Promise<Segment> {
    const copies: Array<{ volume: string, file: string, handle: FileHandle }> = []
    const problems: string[] = []
    let ioError: unknown
    for (const volume of volumes) {
      const file = path.join(home.dirOf(volume), segmentFileName(id))
      let handle: FileHandle
      try {
        handle = await layer.open(file, false)
      } catch (err) {
        problems.push(`${file}: ${(err as Error).message}`)
        // Missing is what a lost copy looks like; anything else (EIO, ENOSPC) is the disk's answer.
        if (!(err instanceof LogdiskError && err.code === 'NOT_FOUND')) ioError ??= err
        continue
      }
      let problem: string | undefined
      try {
        problem = await segmentHeaderProblem(handle, id, geometry)
      } catch (err) {
        problems.push(`${file}: ${(err as Error).message}`)
        ioError ??= err
        await handle.close()
        continue
      }
      if (problem) {
        problems.push(`segment ${file}: ${problem}`)
        await handle.close()
        continue
      }
      copies.push({ volume, file, handle })
    }
    if (copies.length === 0) {
      if (ioError !== undefined) throw ioError
      throw new LogdiskError('CORRUPT', problems[0] ?? `segment ${id} has no copy on any pool volume`)
    }
    if (problems.length > 0) log.error({ segment: id, problems }, 'a copy of a segment is missing or damaged; reading from the others (run logdisk verify)')
    const handle = copies.length === 1 ? copies[0].handle : new MirroredHandle(copies, log, onDropped)
    return new Segment(id, copies[0].file, handle, copies.map(c => c.volume), await handle.size())
  }

  /**
   * fdatasync of the file outside `sync` (the cut after a failed append): a failure counts as
   * one of sync's (writebackFailed), since the pages it left unwritten may hold earlier
   * appends that no flush covered yet.
   */
  async datasyncFile (): Promise<void> {
    try {
      await this.handle.datasync()
    } catch (err) {
      this.writebackFailed ??= err
      throw err
    }
  }

  /**
   * Drops the file's pages from the page cache once it is synced (advisory, never throws):
   * a no-op while a write since the last sync is not yet durable, since only clean pages go.
   */
  async dropCache (): Promise<void> {
    if (this.unsynced || this.syncing !== undefined || this.handle.dropCache === undefined) return
    await this.handle.dropCache().catch(() => undefined)
  }

  async sync (): Promise<void> {
    // A datasync already running (a checkpoint's, outside the append lock) clears `unsynced`
    // before it is done and may yet fail: wait for it, then sync if still needed (or fail,
    // if it failed: writebackFailed).
    while (this.syncing) await this.syncing
    if (this.writebackFailed !== undefined) {
      throw earlierFailure(this.file, this.writebackFailed)
    }
    if (!this.unsynced) return
    this.unsynced = false
    let done!: () => void
    this.syncing = new Promise(resolve => { done = resolve })
    try {
      await this.handle.datasync()
      if (this.unsyncedDirs !== undefined) {
        // Only the copies still in use: a copy a mirror dropped (its disk failed) is not synced.
        const volumes = new Set(this.volumes)
        const { layer, dirs } = this.unsyncedDirs
        for (const [volume, dir] of dirs) if (volumes.has(volume)) await layer.syncDir(dir)
        this.unsyncedDirs = undefined
      }
    } catch (err) {
      this.unsynced = true
      this.writebackFailed = err
      throw err
    } finally {
      this.syncing = undefined
      done()
    }
  }

  close (): Promise<void> {
    return this.handle.close()
  }
}

function uuidBytes (uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex')
}

export function encodeSegmentHeader (id: number, g: SegmentGeometry): Buffer {
  const buf = Buffer.alloc(SEGMENT_HEADER_BYTES)
  buf.write(SEGMENT_MAGIC, 0, 'latin1')
  buf.writeUInt32LE(SEGMENT_FORMAT_VERSION, 16)
  buf.writeUInt32LE(g.blockBytes, 20)
  buf.writeDoubleLE(g.segmentBytes, 24)
  buf.writeDoubleLE(id, 32)
  buf.writeDoubleLE(Date.now(), 40)
  uuidBytes(g.uuid).copy(buf, 48)
  buf.writeUInt32LE(crc32c(buf.subarray(0, 64)), 64)
  return buf
}

/**
 * What is wrong with the header page of the open segment file `handle` (read from disk), or
 * undefined when it belongs here. The header page is written whole by `create`; a shorter
 * file is one a crash cut inside that write (its first 68 bytes may yet check out): never a
 * usable segment, whose tail would then lie past its end. A read error is thrown.
 */
export async function segmentHeaderProblem (handle: FileHandle, id: number, g: SegmentGeometry): Promise<string | undefined> {
  const header = Buffer.alloc(SEGMENT_HEADER_BYTES)
  const n = await readUpTo(handle, header, 0)
  return n < SEGMENT_HEADER_BYTES ? 'too short' : checkSegmentHeader(header, id, g)
}

/** Returns what is wrong with a segment header, or undefined when it belongs here. */
export function checkSegmentHeader (buf: Buffer, id: number, g: SegmentGeometry): string | undefined {
  if (buf.toString('latin1', 0, 16) !== SEGMENT_MAGIC) return 'not a logdisk segment (bad magic)'
  if (buf.readUInt32LE(64) !== crc32c(buf.subarray(0, 64))) return 'header checksum mismatch'
  if (buf.readUInt32LE(16) !== SEGMENT_FORMAT_VERSION) return `unknown segment format ${buf.readUInt32LE(16)}`
  if (!buf.subarray(48, 64).equals(uuidBytes(g.uuid))) return 'belongs to another store'
  if (buf.readDoubleLE(32) !== id) return `holds segment ${buf.readDoubleLE(32)}, not ${id}`
  if (buf.readUInt32LE(20) !== g.blockBytes || buf.readDoubleLE(24) !== g.segmentBytes) return 'geometry differs from the store'
  return undefined
}
