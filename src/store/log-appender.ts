import { pack } from 'msgpackr'
import { LogdiskError, fromSystemError, isFilesystemFull, isLogdiskError } from '../errors'
import { writeConfig } from './config'
import { blockCrcs } from './crc'
import { encodeMarker, encodeMoveHeader, encodeTrim, encodeTrimMove, encodeWriteHeader, type TrimRun } from './entry'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, EntryKind, MAX_ENTRY_BLOCKS, MAX_TRIM_BLOCKS, MOVE_RECORD_BYTES, SEGMENT_HEADER_BYTES, STORE_FORMAT_VERSION, TRIMMED, TRIM_MOVE_RECORD_BYTES, trimHolder, WRITEVS_IN_FLIGHT, WRITEV_MAX_BYTES } from './format'
import type { EntryRecord } from './index-db'
import { Mutex } from './mutex'
import { positionOf, type IoOptions, type StoreParts, type LogPart } from './parts'
import { HIGHEST_VOLUME_ID, HIGHEST_VOLUME_ID_SEQ } from './recovery'
import { NextSegment } from './next-segment'
import { appendLimit, markerUse, type AppendUse } from './pass-fence'
import { MirroredHandle } from './mirrored-handle'
import { Segment } from './segment'
import { exactSize, formatBytes } from '../size-text'

const MAX_MARKER_BYTES = 1024 * 1024 // the scanner refuses larger markers
/** A group commit takes at most this many bytes of writes (later ones start the next group). */
const GROUP_MAX_BYTES = 16 * 1024 * 1024
/**
 * One writev of a group commit carries at most WRITEV_MAX_BYTES (format.ts) / this many
 * buffers (at least one entry). 1 MiB: small writes group (4 KiB random writes: up to 256 per
 * writev), while 1 MiB writes keep one writev each, as before group commit; 8 MiB writevs
 * measured slower on sequential 1 MiB QD8 writes (the writes of a big writev all wait for
 * its end). WRITEVS_IN_FLIGHT (format.ts) of them run at once (see commitGroup): four is
 * libuv's default thread pool; the index's LevelDB writes and reads share that pool. Both
 * are in format.ts because recovery bounds with them what a crash may tear.
 */
const WRITEV_MAX_PARTS = 512

/** A whole-block write waiting for its group commit. */
interface PendingWrite {
  block: number
  data: Buffer
  /** The CRC32C of each of its blocks, if the caller had them (else computed when cut). */
  crcs: Uint32Array | undefined
  /** Entries of it not yet applied (it resolves when the last one is). */
  left: number
  resolve: () => void
  reject: (err: unknown) => void
}

/** Whole-block writes queued together; committed by one lock section. */
interface WriteGroup {
  writes: PendingWrite[]
  bytes: number
  /** `lock.queued` just after this group's section was queued: later writes join only while it is unchanged. */
  ticket: number
  /** One write whose caller has nothing else to do (IoOptions.inline): its writev may be synchronous. */
  inline: boolean
  /**
   * Times its writes were appended again after a filesystem under the current segment refused
   * them (full, read-only): first in a new segment (rolledAway), then, mirrored, on the
   * copies with room.
   */
  attempts?: number
}

/** One write entry of a group commit, encoded, waiting for its writev. */
interface GroupEntry {
  write: PendingWrite
  header: Buffer
  payload: Buffer
  block: number
  crcs: Uint32Array
}

/** One writev of a group commit, started at `at` in the current segment and not landed yet. */
interface Flight {
  entries: GroupEntry[]
  bytes: number
  at: number
  timeMs: number
  written: Promise<void>
}

/**
 * Largest writev done inline (IoOptions.inline): a writev's whole payload (WRITEV_MAX_BYTES,
 * 1 MiB, also the transport's largest write) plus room for its entry headers and CRC
 * tables. A buffered loop device (`mount -o loop`) sends its writes one at a time, 512 KiB
 * each, so every one is alone; written inline instead of through the thread pool, ext4's
 * sequential writes on it ran 968-1,034 MB/s against 717-887 (six alternating pairs,
 * 2026-12-05), at 0.9-1.0 CPU s/GiB instead of 1.1-1.3. On the raw image at depth 1 (1 MiB
 * and 512 KiB writes) the two ways stayed within their spread.
 */
const INLINE_WRITE_MAX_BYTES = WRITEV_MAX_BYTES + 64 * 1024

/** A synchronous writev as the settled promise the asynchronous one would give. */
function writeNow (writevNow: (buffers: Buffer[], position: number) => void, parts: Buffer[], at: number): Promise<void> {
  try {
    writevNow(parts, at)
    return Promise.resolve()
  } catch (err) {
    return Promise.reject(err)
  }
}

/** Bytes of writevs started and not landed yet: they lie right after the tail. */
function bytesOf (flights: Flight[]): number {
  return flights.reduce((n, f) => n + f.bytes, 0)
}

/**
 * The log's write side (004 cl. 2-6): appends entries at the tail of the current segment,
 * rolls to a new segment when it is full, and syncs segments in log order. Every append runs
 * under one lock (the tail, the sequence number and read-modify-write of partial blocks need
 * no other locking), and the index batch and the block map take an entry in the same
 * synchronous step as the tail moves past it (`appendEntry`), so a checkpoint never covers a
 * log position whose entry the batch does not hold.
 *
 * Sync order: a sealed segment is not synced when it rolls (a 64 MiB fdatasync per roll would
 * halve sequential writes); `syncAll` syncs every sealed segment, oldest first, before the
 * current one, so a flush covers everything before it, and after a crash a torn older
 * segment cuts the log there (recovery.ts keeps later, unflushed segments aside).
 */
export class LogAppender implements LogPart {
  /** Appends go one at a time through this lock; passes take it to read a consistent tail. */
  readonly lock = new Mutex()
  /** Sealed segments written since their last fdatasync, oldest first. */
  private readonly unsyncedSealed: Segment[] = []
  /** Log position just past the last completed append. */
  completedPosition: number
  /** The flush's sync running, and the one flushes called meanwhile wait for (`flush`). */
  private syncRunning: Promise<void> | undefined
  private syncNext: Promise<void> | undefined
  /** Whole-block writes not yet taken by their group commit. */
  private openGroup: WriteGroup | undefined
  /** The segment after the current one, made ahead so that a roll does not wait for it. */
  private readonly next: NextSegment
  /** A segment a failed append left bytes in past its tail, until they are cut (cutBack). */
  private cutPending: Segment | undefined
  /** The pending cut's truncate was made once and its sync failed (cutStale). */
  private cutUnsynced = false
  /**
   * Every entry up to this seq is durable: a `syncAll` that started after it landed has
   * completed (recovery synced everything it read, so at open it is `seq`). Each entry
   * appended records it (`durableSeq`), which is how recovery tells a torn unflushed write
   * from bit rot in flushed data.
   */
  private durableSeq: number
  /** Writevs done inline (IoOptions.inline), all told. */
  inlineWrites = 0

  constructor (
    private readonly p: StoreParts,
    /** The segment being appended to. */
    public current: Segment,
    /** Sequence number of the last entry. */
    public seq: number,
    /** Time of the last entry (entry times never decrease along the log). */
    private lastTimeMs: number
  ) {
    this.completedPosition = positionOf(p.config, current.id, current.tail)
    this.next = new NextSegment(p)
    this.durableSeq = seq
  }

  /**
   * Writes `data` at byte `offset` (checked by the caller); takes the lock. Group commit:
   * whole-block writes that arrive while the lock is busy wait together, and one lock
   * section appends all of them with one writev (`commitGroup`), in arrival order. A write
   * joins the open group only while nothing else (a flush, a marker, an unaligned write, a
   * pass) was queued on the lock after it, so every caller still sees lock order. Each write
   * resolves once all its entries are in the log file, as before (durable after a flush).
   */
  write (offset: number, data: Buffer, blockCrcs?: Uint32Array, opts?: IoOptions): Promise<void> {
    const B = this.p.config.blockBytes
    if (offset % B !== 0 || data.length % B !== 0) return this.lock.run(() => this.writeLocked(offset, data))
    const crcs = blockCrcs?.length === data.length / B ? blockCrcs : undefined
    return new Promise<void>((resolve, reject) => {
      const w: PendingWrite = { block: offset / B, data, crcs, left: 0, resolve, reject }
      const open = this.openGroup
      if (open !== undefined && open.ticket === this.lock.queued && open.bytes + data.length <= GROUP_MAX_BYTES) {
        open.writes.push(w)
        open.bytes += data.length
        open.inline = false // others wait now
        return
      }
      const group: WriteGroup = { writes: [w], bytes: data.length, ticket: 0, inline: opts?.inline === true }
      this.openGroup = group
      this.lock.run(() => this.commitGroup(group)).catch(() => undefined) // each write settles itself
      group.ticket = this.lock.queued
    })
  }

  /**
   * Appends a group of whole-block writes (under the lock): their entries are cut and
   * checksummed as `appendWrite` would and gathered into writevs of at most WRITEV_MAX_BYTES
   * each. Up to WRITEVS_IN_FLIGHT of those writevs run at once, each at its own place after
   * the tail (a 1 MiB copy into the page cache is most of a sequential write's time, and
   * one at a time left the disk idle while the next one was cut). They land in log order:
   * the oldest writev's entries are applied (tail, block map, index batch) in one
   * synchronous step once it is done, as `appendEntry` does for one entry, so the tail
   * never moves past an entry whose bytes are not all written. A failed writev fails the
   * writes it held and every later write of the group, once every writev started has
   * settled, and the file is cut back to the tail (where the failed one began); earlier writes stay
   * written.
   */
  private async commitGroup (group: WriteGroup): Promise<void> {
    if (this.openGroup === group) this.openGroup = undefined
    if (group.attempts === undefined) rollWhenFull(this.current, true) // set by each append: a fallback (rolledAway) lasts one
    const B = this.p.config.blockBytes
    // Never more than recovery allows for (format.ts inFlightBytes).
    const writevMax = Math.min(this.p.opts.writevMaxBytes ?? WRITEV_MAX_BYTES, WRITEV_MAX_BYTES)
    const flights: Flight[] = [] // started, not landed yet, oldest first
    let entries: GroupEntry[] = []
    let bytes = 0
    let next = 0 // writes[next..] have entries not yet cut
    const start = async (): Promise<void> => {
      if (flights.length >= WRITEVS_IN_FLIGHT) await this.landOldest(flights)
      flights.push(await this.startWritev(flights, entries, bytes, group.inline))
      entries = []
      bytes = 0
    }
    try {
      for (; next < group.writes.length; next++) {
        const w = group.writes[next]
        const blocks = w.data.length / B
        const outside = this.outsideVolume('write', w.block * B, w.data.length)
        if (outside !== undefined) {
          w.reject(outside)
          continue
        }
        w.left++ // held while its entries are cut: a writev of its first entries must not resolve it
        for (let b = 0; b < blocks;) {
          let count = Math.min(blocks - b, MAX_ENTRY_BLOCKS, this.blocksThatFit(bytesOf(flights) + bytes))
          if (count < 1 || bytes >= writevMax || entries.length * 2 >= WRITEV_MAX_PARTS) {
            if (entries.length > 0) await start()
            count = Math.min(blocks - b, MAX_ENTRY_BLOCKS, this.blocksThatFit(bytesOf(flights)))
            if (count < 1) {
              while (flights.length > 0) await this.landOldest(flights)
              await this.roll()
              count = Math.min(blocks - b, MAX_ENTRY_BLOCKS, this.blocksThatFit(0))
            }
          }
          const payload = w.data.subarray(b * B, (b + count) * B)
          const crcs = w.crcs !== undefined ? w.crcs.subarray(b, b + count) : blockCrcs(payload, count, B)
          entries.push({ write: w, header: Buffer.alloc(0), payload, block: w.block + b, crcs })
          w.left++
          bytes += ENTRY_HEADER_BYTES + count * BLOCK_CRC_BYTES + payload.length
          b += count
        }
        if (--w.left === 0) w.resolve() // all its entries applied already (none were cut)
      }
      if (entries.length > 0) await start()
      while (flights.length > 0) await this.landOldest(flights)
    } catch (err) {
      if (flights.length > 0) {
        // Nothing may still be writing past the tail when the next append starts there.
        await Promise.allSettled(flights.map(f => f.written))
        // Leave no entry of a failed write behind the tail: a later scan would stop at a
        // partial one, or read whole later ones as the entries that follow the next appends.
        await this.cutBack()
      }
      // The writes of the failed writev and every later one fail; earlier ones resolved.
      const failed = new Set(entries.map(e => e.write))
      for (const f of flights) for (const e of f.entries) failed.add(e.write)
      const unsettled = group.writes.filter((w, i) => failed.has(w) || i >= next)
      const attempts = group.attempts ?? 0
      if (attempts < 2 && await this.rolledAway(err, attempts === 0)) {
        for (const w of unsettled) w.left = 0
        return await this.commitGroup({ ...group, writes: unsettled, attempts: attempts + 1 })
      }
      for (const w of unsettled) w.reject(err)
    }
  }

  /** Errors of writes into the current segment itself (rolledAway tells them from a failed roll's). */
  private readonly failedAppends = new WeakSet<object>()

  private appendFailed (err: unknown, segment: Segment): LogdiskError {
    const failed = fromSystemError(err, `append to ${segment.file}`)
    this.failedAppends.add(failed)
    return failed
  }

  /**
   * After an append into the current segment failed because its filesystem refused it: full
   * (ENOSPC, EDQUOT; not the pool's own accounting) or read-only (an ext4 gone read-only after
   * errors keeps files open for writing, and writes fail EROFS). The segment is sealed at its
   * tail and the next one placed where the pool finds room (another volume; its write probe
   * keeps new segments off a read-only one), once per append; the caller then appends what
   * failed again (appendOrRoll: writes, trims, markers, compaction's moves; commitGroup). Without
   * it one volume's filesystem failed the writer while another volume had room. `mayRoll` false
   * (the append failed again, in the segment the roll made): no second roll, only the mirrored
   * fallback below. Mirrored (MirroredHandle.rollWhenFull): when no roll could be made, the
   * current segment drops its full copies for this append, which goes on on the copies with room.
   */
  private async rolledAway (err: unknown, mayRoll = true): Promise<boolean> {
    // Only the write into the current segment: a roll that failed for room already tried placing.
    if (!this.failedAppends.has(err as object)) return false
    const readOnly = isLogdiskError(err, 'READ_ONLY')
    if (!isFilesystemFull(err) && !readOnly) return false
    try {
      if (!mayRoll) throw new LogdiskError('NO_SPACE', 'the segment the last roll made is refused too')
      // A single copy fresh from the pool's placement on a full filesystem would be placed the
      // same way again (the pool saw room there); a mirrored one may have been made ahead while
      // a copy's filesystem still had room, and the pool's probe sees a read-only one.
      if (this.current.tail <= SEGMENT_HEADER_BYTES && !readOnly && !isRollingWhenFull(this.current)) throw new LogdiskError('NO_SPACE', 'the segment is new: rolling gains nothing')
      await this.next.discard() // made ahead, perhaps on the same full filesystem
      await this.roll()
    } catch (rollErr) {
      // Mirrored: the copies on filesystems with room took the write; it goes on with them
      // alone (degraded, as after an I/O error: pool repair makes the copy again).
      if (rollWhenFull(this.current, false)) {
        this.p.logger.warn({ segment: this.current.id, err: (rollErr as Error).message }, 'a copy\'s filesystem is full and no segment could be placed on volumes with room; trying the copies with room alone')
        return true
      }
      this.p.logger.warn({ segment: this.current.id, err: (rollErr as Error).message }, 'the filesystem under the current segment is full and no other segment could be made')
      return false
    }
    this.p.logger.warn({ segment: this.current.id, err: (err as Error).message }, 'the filesystem under the previous segment is full or read-only: sealed it and appending in a new segment')
    return true
  }

  /**
   * Starts one writev of encoded group entries right after those of `flights` (started before
   * it, not landed yet) in the current segment; their sequence numbers and times follow the
   * last entry started (entry times never decrease along the log).
   */
  private async startWritev (flights: Flight[], entries: GroupEntry[], bytes: number, inline = false): Promise<Flight> {
    await this.p.index.backpressure()
    if (flights.length === 0) await this.cutStale()
    const B = this.p.config.blockBytes
    const segment = this.current
    const at = segment.tail + bytesOf(flights)
    if (at + bytes > this.limit('foreground')) throw new LogdiskError('IO', 'internal: a group commit does not fit the segment')
    const timeMs = Math.max(this.nextTimeMs(), flights.at(-1)?.timeMs ?? 0)
    const parts: Buffer[] = []
    let seq = this.seq + flights.reduce((n, f) => n + f.entries.length, 0)
    for (const e of entries) {
      e.header = encodeWriteHeader(++seq, timeMs, e.block, e.crcs, B, this.entryDurableSeq())
      parts.push(e.header, e.payload)
    }
    const writevNow = inline && flights.length === 0 && bytes <= INLINE_WRITE_MAX_BYTES ? segment.handle.writevNow?.bind(segment.handle) : undefined
    if (writevNow) this.inlineWrites++
    const written = writevNow ? writeNow(writevNow, parts, at) : segment.handle.writev(parts, at)
    written.catch(() => undefined) // awaited by landOldest, maybe only after a later one failed
    return { entries, bytes, at, timeMs, written }
  }

  /**
   * Waits for the oldest writev started and applies its entries. When it failed, throws,
   * leaving it and the later ones in `flights` (commitGroup cleans up).
   */
  private async landOldest (flights: Flight[]): Promise<void> {
    const f = flights[0]
    const segment = this.current
    try {
      await f.written
    } catch (err) {
      throw this.appendFailed(err, segment)
    }
    flights.shift()
    if (f.at !== segment.tail) throw new LogdiskError('IO', 'internal: a group commit landed out of log order')
    const start = positionOf(this.p.config, segment.id, segment.tail)
    this.moveTail(segment, f.bytes)
    if (this.completedPosition !== start + f.bytes) throw new LogdiskError('IO', 'internal: a group commit moved the tail by a size it did not encode')
    let position = start
    let s = this.seq
    for (const e of f.entries) {
      this.applyWrite(++s, f.timeMs, position, e.header.length, e.block, e.crcs)
      position += e.header.length + e.payload.length
    }
    this.seq = s
    this.lastTimeMs = f.timeMs
    for (const e of f.entries) if (--e.write.left === 0) e.write.resolve()
    this.p.index.checkpointIfFull()
  }

  /**
   * Takes write entry `seq` (its header of `headerBytes` at log `position`, then its blocks)
   * into the index batch and the block map; part of the synchronous step that moves the tail.
   */
  private applyWrite (seq: number, timeMs: number, position: number, headerBytes: number, block: number, crcs: Uint32Array): void {
    const B = this.p.config.blockBytes
    const batch = this.p.index.batch
    const dataPosition = position + headerBytes
    batch.entries.set(seq, { kind: EntryKind.write, timeMs, position, block, count: crcs.length })
    for (let i = 0; i < crcs.length; i++) {
      this.p.map.set(block + i, dataPosition + i * B, crcs[i], seq)
      batch.addBlock(block + i, seq, dataPosition + i * B, crcs[i])
    }
  }

  /**
   * The error for a write or discard that runs past the end of the volume as it is now, under
   * the lock: the caller checked against the size when it was called, and a shrink (resize)
   * that held the lock meanwhile may have moved the end below it. Landing anyway put
   * acknowledged bytes past the new end, which a later grow showed where its new blocks must
   * read as zeros (resize-write-race.test.ts).
   */
  private outsideVolume (what: 'write' | 'discard', offset: number, length: number): LogdiskError | undefined {
    const size = this.p.config.sizeBytes
    if (offset + length <= size) return undefined
    return new LogdiskError('OUT_OF_RANGE', `${what} of ${formatBytes(length)} at byte ${offset} runs past the end of the ${exactSize(size)} volume (it shrank while the ${what} waited)`)
  }

  /**
   * Writes `data` at byte `offset` (checked by the caller); call under the lock. Unaligned
   * writes read the edge blocks and write whole blocks.
   */
  async writeLocked (offset: number, data: Buffer): Promise<void> {
    const outside = this.outsideVolume('write', offset, data.length)
    if (outside !== undefined) throw outside
    await this.p.index.backpressure()
    const B = this.p.config.blockBytes
    const first = Math.floor(offset / B)
    const end = Math.ceil((offset + data.length) / B)
    const head = offset - first * B
    const tail = end * B - (offset + data.length)
    let blocks = data
    if (head !== 0 || tail !== 0) {
      blocks = Buffer.alloc((end - first) * B)
      if (head !== 0) await this.p.reader.readCurrent(first * B, B, blocks.subarray(0, B))
      if (tail !== 0 && (end - 1 !== first || head === 0)) await this.p.reader.readCurrent((end - 1) * B, B, blocks.subarray((end - 1 - first) * B))
      data.copy(blocks, head)
    }
    for (let b = first; b < end;) {
      const n = await this.appendWrite(b, blocks.subarray((b - first) * B, (end - first) * B))
      b += n
    }
  }

  /** Appends one write entry holding as many of `data`'s blocks as fit; returns how many. */
  private async appendWrite (block: number, data: Buffer): Promise<number> {
    const B = this.p.config.blockBytes
    let count = Math.min(data.length / B, MAX_ENTRY_BLOCKS, this.blocksThatFit())
    if (count < 1) {
      await this.roll()
      count = Math.min(data.length / B, MAX_ENTRY_BLOCKS, this.blocksThatFit())
    }
    const crcs = blockCrcs(data, count, B)
    const seq = this.seq + 1
    const timeMs = this.nextTimeMs()
    const header = encodeWriteHeader(seq, timeMs, block, crcs, B, this.entryDurableSeq())
    const payload = data.subarray(0, count * B)
    await this.appendOrRoll([header, payload], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      this.applyWrite(seq, timeMs, this.completedPosition - payload.length - header.length, header.length, block, crcs)
    })
    this.p.index.checkpointIfFull()
    return count
  }

  /**
   * appendEntry, once more in a new segment when the filesystem under the current one was
   * full or read-only (rolledAway), and mirrored, once more on the copies with room.
   * `applied` must take the entry's position from the tail (it may land in another segment
   * than the one current when the entry was encoded; a roll changes no sequence number).
   */
  private async appendOrRoll (parts: Buffer[], applied: () => void, use: AppendUse = 'foreground'): Promise<void> {
    rollWhenFull(this.current, true) // set by each append: a fallback (rolledAway) lasts one
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.appendEntry(parts, use, applied)
      } catch (err) {
        if (attempt >= 2 || !(await this.rolledAway(err, attempt === 0))) throw err
      }
    }
  }

  /**
   * Discards (TRIM, F11) `length` bytes at `offset` (checked by the caller); call under the
   * lock. Whole blocks that hold data become trim entries; partial edge blocks are written
   * as zeros.
   */
  async discardLocked (offset: number, length: number): Promise<void> {
    const outside = this.outsideVolume('discard', offset, length)
    if (outside !== undefined) throw outside
    const B = this.p.config.blockBytes
    const map = this.p.map
    const first = Math.ceil(offset / B)
    const end = Math.floor((offset + length) / B)
    if (first >= end) return this.writeLocked(offset, Buffer.alloc(length)) // inside one block
    // In block order, as a write of zeros would go into the log (a crash keeps a prefix).
    if (first * B > offset) await this.writeLocked(offset, Buffer.alloc(first * B - offset))
    // The blocks of [first, end) that hold data, found from whichever is smaller: the range or the map.
    // On a clone (fallThrough) a block it never wrote reads its parent's data: every block
    // that is not trimmed already needs the trim entry.
    const held: number[] = []
    if (this.p.opts.fallThrough) {
      for (let b = first; b < end; b++) if (map.position(b) !== TRIMMED) held.push(b)
    } else if (end - first <= map.count) {
      for (let b = first; b < end; b++) if (map.position(b) >= 0) held.push(b)
    } else {
      map.forEach((b, position) => { if (b >= first && b < end && position >= 0) held.push(b) })
      held.sort((a, b) => a - b)
    }
    for (let i = 0; i < held.length;) {
      let n = 1
      while (i + n < held.length && held[i + n] === held[i] + n && n < MAX_TRIM_BLOCKS) n++
      await this.appendTrim(held[i], n)
      i += n
    }
    if (offset + length > end * B) await this.writeLocked(end * B, Buffer.alloc(offset + length - end * B))
  }

  /** Appends one trim entry: blocks [block, block+count) read as zeros from it on. */
  private async appendTrim (block: number, count: number): Promise<void> {
    if (this.current.tail + ENTRY_HEADER_BYTES > this.limit('foreground')) await this.roll()
    const seq = this.seq + 1
    const timeMs = this.nextTimeMs()
    await this.appendOrRoll([encodeTrim(seq, timeMs, block, count, this.entryDurableSeq())], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      const position = this.completedPosition - ENTRY_HEADER_BYTES
      this.p.index.batch.entries.set(seq, { kind: EntryKind.trim, timeMs, position, block, count })
      const holder = trimHolder(this.current.id) // the index row says where the trim is held
      for (let i = 0; i < count; i++) {
        this.p.map.set(block + i, TRIMMED, 0, seq)
        this.p.index.batch.addBlock(block + i, seq, TRIMMED, holder)
      }
    })
    this.p.index.checkpointIfFull()
  }

  /**
   * Appends a marker entry (sync point, snapshot cut, history); call under the lock. How far
   * into the maintenance reserve it may go depends on its kind (pass-fence.ts markerUse): a
   * history marker, which compaction must log before it frees anything, fits in the current
   * segment even when writes filled it, so a full pool does not refuse it.
   */
  async appendMarkerLocked (kind: EntryKind, payload: Record<string, unknown>): Promise<EntryRecord & { seq: number }> {
    if (this.p.opts.faults?.has('marker')) throw new LogdiskError('IO', 'injected fault: the marker write failed (LOGDISK_FAULTS=marker)')
    const body = pack(payload)
    if (body.length > MAX_MARKER_BYTES) throw new LogdiskError('BAD_ARGUMENT', `a marker of ${body.length} bytes is over the ${MAX_MARKER_BYTES}-byte limit (a shorter note, please)`)
    const use = markerUse(kind)
    if (this.current.tail + ENTRY_HEADER_BYTES + body.length > this.limit(use)) await this.roll()
    const seq = this.seq + 1
    const timeMs = this.nextTimeMs()
    const bytes = ENTRY_HEADER_BYTES + body.length
    const entry: EntryRecord = { kind, timeMs, position: 0, block: 0, count: 0, payload, bytes }
    await this.appendOrRoll([encodeMarker(kind, seq, timeMs, body, this.entryDurableSeq())], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      const position = entry.position = this.completedPosition - bytes // after a roll away, in the new segment
      const batch = this.p.index.batch
      batch.entries.set(seq, entry)
      if (kind === EntryKind.snapshot || kind === EntryKind.deleteSnapshot) {
        for (const [cut, record] of this.p.snapshotTable.apply(kind, seq, position, timeMs, payload)) batch.snapshots.set(cut, record)
        batch.counters.set(HIGHEST_VOLUME_ID, this.p.snapshotTable.highestId)
        batch.counters.set(HIGHEST_VOLUME_ID_SEQ, this.p.snapshotTable.highestIdSeq)
      }
      const resized = this.p.snapshotTable.applyResize(kind, seq, payload)
      if (resized) batch.resizes.set(resized.seq, resized)
    }, use)
    await this.syncAll() // a marker is reported only once it is durable
    return { ...entry, seq }
  }

  /**
   * Appends a move entry holding these versions, `data` being their bytes in order (the
   * cleaning step of compaction). Each keeps its block and original sequence number; the
   * map takes the new place only where the version is still the block's newest (BlockMap.set
   * ignores an older sequence number). Takes the lock. A foreground append (pass-fence.ts):
   * moves are bulky and compaction goes on without them when there is no room (NO_SPACE).
   */
  appendMove (versions: Array<{ block: number, seq: number, crc: number }>, data: Buffer): Promise<void> {
    const B = this.p.config.blockBytes
    return this.lock.run(async () => {
      const need = ENTRY_HEADER_BYTES + versions.length * (MOVE_RECORD_BYTES + B)
      if (this.current.tail + need > this.limit('foreground')) await this.roll()
      const seq = this.seq + 1
      const timeMs = this.nextTimeMs()
      const header = encodeMoveHeader(seq, timeMs, versions, B, this.entryDurableSeq())
      await this.appendOrRoll([header, data], () => {
        this.seq = seq
        this.lastTimeMs = timeMs
        const batch = this.p.index.batch
        const dataPosition = this.completedPosition - data.length
        batch.entries.set(seq, { kind: EntryKind.move, timeMs, position: dataPosition - header.length, block: 0, count: versions.length })
        versions.forEach((v, i) => {
          this.p.map.set(v.block, dataPosition + i * B, v.crc, v.seq)
          batch.addBlock(v.block, v.seq, dataPosition + i * B, v.crc)
        })
      })
    })
  }

  /**
   * Appends a trim move entry holding these runs of trimmed versions (the cleaning step of
   * compaction, for trims). Each keeps its block and original sequence number; the index rows
   * name this entry's segment as their holder (format.ts trimHolder), so the trim entries they
   * came from may be freed. The map does not change: the versions still read as zeros. Takes
   * the lock; a foreground append, as moves are.
   */
  appendTrimMove (runs: TrimRun[]): Promise<void> {
    return this.lock.run(async () => {
      const bytes = ENTRY_HEADER_BYTES + runs.length * TRIM_MOVE_RECORD_BYTES
      if (this.current.tail + bytes > this.limit('foreground')) await this.roll()
      const seq = this.seq + 1
      const timeMs = this.nextTimeMs()
      const entry = encodeTrimMove(seq, timeMs, runs, this.entryDurableSeq())
      await this.appendOrRoll([entry], () => {
        this.seq = seq
        this.lastTimeMs = timeMs
        const batch = this.p.index.batch
        batch.entries.set(seq, { kind: EntryKind.trimMove, timeMs, position: this.completedPosition - entry.length, block: 0, count: runs.length })
        const holder = trimHolder(this.current.id)
        for (const run of runs) for (let i = 0; i < run.count; i++) batch.addBlock(run.block + i, run.seq, TRIMMED, holder)
      })
      this.p.index.checkpointIfFull()
    })
  }

  /** Blocks of one more write entry that fit the current segment after `pendingBytes` more (before the maintenance reserve). */
  private blocksThatFit (pendingBytes = 0): number {
    const room = this.limit('foreground') - this.current.tail - pendingBytes - ENTRY_HEADER_BYTES
    return Math.max(0, Math.floor(room / (this.p.config.blockBytes + BLOCK_CRC_BYTES)))
  }

  /**
   * Where an append for `use` must end in a segment: foreground appends leave the maintenance
   * reserve at the end of every segment free (pass-fence.ts, the one rule of it).
   */
  private limit (use: AppendUse): number {
    return appendLimit(use, this.p.config.segmentBytes)
  }

  /**
   * Writes an entry at the tail of the current segment; the tail moves only on success.
   * `applied` runs in the same synchronous step as the tail move, so a checkpoint can never
   * see a log position that covers an entry the index batch does not hold yet.
   */
  private async appendEntry (parts: Buffer[], use: AppendUse, applied: () => void): Promise<void> {
    await this.cutStale()
    const segment = this.current
    const bytes = parts.reduce((n, p) => n + p.length, 0)
    if (segment.tail + bytes > this.limit(use)) throw new LogdiskError('IO', 'internal: entry does not fit the segment')
    try {
      await segment.handle.writev(parts, segment.tail)
    } catch (err) {
      // Leave no partial entry behind the tail (a later scan would stop at it).
      await this.cutBack()
      throw this.appendFailed(err, segment)
    }
    this.moveTail(segment, bytes)
    applied()
  }

  /**
   * After a failed append (under the lock, nothing in flight): cuts the current segment back
   * to its tail. If the cut fails too, the bytes past the tail stay until `cutStale` makes it:
   * whole entries of a group's later writevs there carry the sequence numbers the next
   * appends take, so an append ending where one begins would make a scan read it as the
   * entry that follows (a rejected write would come back on the next open).
   */
  private async cutBack (): Promise<void> {
    this.cutPending = this.current
    await this.cutStale().catch(err => {
      this.p.logger.error({ segment: this.current.id, tail: this.current.tail, err: (err as Error).message }, 'could not cut a failed append off the log; appends wait until it is cut')
    })
  }

  /** Makes the cut a failed append left pending (see cutBack); throws IO while it fails. Under the lock. */
  async cutStale (): Promise<void> {
    const segment = this.cutPending
    if (segment === undefined) return
    try {
      await segment.handle.truncate(segment.tail)
    } catch (err) {
      // A filesystem gone read-only (after errors) refused the append and refuses the cut:
      // when the append left nothing past the tail, there is nothing to cut. Not when an
      // earlier truncate of this cut went into the page cache and its sync failed: the disk
      // may still hold the bytes past the tail.
      const nothingPast = !this.cutUnsynced && isLogdiskError(err, 'READ_ONLY') && await segment.handle.size().then(n => n <= segment.tail, () => false)
      if (!nothingPast) throw fromSystemError(err, `cut ${segment.file} back to ${segment.tail} after a failed append`)
      if (this.cutPending === segment) this.cutPending = undefined
      return
    }
    try {
      // Durable before anything is appended at the tail again: otherwise a power loss could
      // undo the cut and keep the failed append's bytes past the new entries' end, where
      // recovery would read them as entries that follow (the hostile tester's attack4 notes).
      await segment.datasyncFile()
    } catch (err) {
      this.cutUnsynced = true
      throw fromSystemError(err, `cut ${segment.file} back to ${segment.tail} after a failed append`)
    }
    this.cutUnsynced = false
    if (this.cutPending === segment) this.cutPending = undefined
  }

  /** The tail moves past `bytes` just written at it (the caller applies their entries in the same step). */
  private moveTail (segment: Segment, bytes: number): void {
    segment.tail += bytes
    segment.unsynced = true
    this.completedPosition = positionOf(this.p.config, segment.id, segment.tail)
    // A store opened on a half-full segment makes its next one ahead too (a roll does at once).
    if (segment.tail * 2 >= this.p.config.segmentBytes) this.next.prepare(segment.id + 1)
  }

  /** Seals the full current segment (now `active`, synced later) and opens the next (004 cl. 6). */
  async roll (): Promise<void> {
    await this.cutStale() // a sealed segment ends at its tail
    const { home, segments } = this.p
    const old = this.current
    // Not synced here (see the class comment): the next flush or checkpoint syncs it first.
    // Listed even when `unsynced` is false: a checkpoint's fdatasync of it may still be
    // running (Segment.sync clears the flag as it starts) and may yet fail; a flush must wait
    // for it, and fail if it failed (Segment.sync does both). Once only: a roll that
    // failed after this line runs again.
    if (this.unsyncedSealed.at(-1) !== old) this.unsyncedSealed.push(old)
    const next = await this.next.take(old.id + 1) ?? await this.makeSegment(old.id + 1)
    home.occupied(next.id, next.volumes)
    this.current = next
    // Sealed: a copy that fails a write there (compaction's headers) is dropped, as before. The
    // new one's is set by each append (appendOrRoll, commitGroup).
    rollWhenFull(old, false)
    segments.ids.push(next.id)
    segments.setVolumes(next.id, next.volumes)
    this.p.reader.adoptOpen(next)
    segments.setState(old.id, 'active')
    segments.setState(next.id, 'current')
    segments.record(old.id)
    segments.record(next.id)
    this.completedPosition = positionOf(this.p.config, next.id, next.tail)
    this.next.prepare(next.id + 1)
  }

  /** Places and creates segment `id` now (none was made ahead, or its volumes no longer suit). */
  private async makeSegment (id: number): Promise<Segment> {
    const { home, segments } = this.p
    const volumes = await home.place(id) // NO_SPACE when the pool is full
    try {
      return await Segment.create(this.p.layer, home, volumes, id, this.p.geometry, this.p.logger, segments.dropHandler(id))
    } catch (err) {
      home.vacated(id, volumes)
      throw err
    }
  }

  /**
   * Removes the segment made ahead if its id is `id` (any when undefined): a drain moving it
   * (it holds nothing), or a clean close. Returns whether there was one.
   */
  discardNext (id?: number): Promise<boolean> {
    return this.next.discard(id)
  }

  /** Closes the handle of the segment made ahead, leaving its file (abandon, as kill -9). */
  dropNext (): Promise<void> {
    return this.next.drop()
  }

  /**
   * Makes segment `id` sealed and durable before a pass copies it: the current segment rolls
   * (checked under the lock: a write may have rolled meanwhile), then everything is synced,
   * so no segment a pass copies or forgets still waits for its fdatasync.
   */
  async seal (id: number): Promise<void> {
    await this.lock.run(async () => {
      if (id === this.current.id) await this.roll()
      await this.syncAll()
    })
  }

  /** Entry times never decrease along the log, so a time maps to a sequence number. */
  private nextTimeMs (): number {
    return Math.max(this.p.now(), this.lastTimeMs)
  }

  /**
   * The `durableSeq` of an entry encoded now (its header says which entries a flush had made
   * durable before it was written). Every entry this logdisk writes has one (entry version 2),
   * so an older store first becomes the current format (see format.ts).
   */
  entryDurableSeq (): number {
    this.upgradeFormat()
    return this.durableSeq
  }

  /** An older store becomes the current format before its first entry of that format (see format.ts). */
  private upgradeFormat (): void {
    const config = this.p.config
    if (config.format >= STORE_FORMAT_VERSION) return
    writeConfig(this.p.dir, { ...config, format: STORE_FORMAT_VERSION })
    ;(config as { format: number }).format = STORE_FORMAT_VERSION
  }

  /**
   * Makes every write called before this call durable (the image's fsync/flush). It waits
   * its turn on the append lock (so writes queued before it are in the file; callers rely on
   * that order), then syncs outside the lock: writes go on while the fdatasync runs. Group
   * flush: a flush that reaches the sync while one runs waits for the next one (the running
   * one may have started before its writes were in the file), and one sync serves every
   * flush waiting for it.
   */
  async flush (): Promise<void> {
    await this.lock.run(async () => undefined)
    return this.groupSync()
  }

  private groupSync (): Promise<void> {
    if (this.syncNext) return this.syncNext
    if (!this.syncRunning) return this.startSync()
    const next = this.syncRunning.catch(() => undefined).then(() => {
      this.syncNext = undefined
      return this.startSync()
    })
    this.syncNext = next
    return next
  }

  /**
   * A segment's fdatasync failed (Segment.failedWriteback): every flush fails from then on,
   * until the store is opened again.
   */
  get writebackFailed (): boolean {
    return this.current.failedWriteback || this.unsyncedSealed.some(s => s.failedWriteback)
  }

  /** Settles once the flushes called so far are done (close and abandon wait for them). */
  async flushesDone (): Promise<void> {
    await (this.syncNext ?? this.syncRunning)?.catch(() => undefined)
  }

  private startSync (): Promise<void> {
    const run: Promise<void> = this.syncAll().finally(() => { if (this.syncRunning === run) this.syncRunning = undefined })
    this.syncRunning = run
    return run
  }

  /**
   * fdatasync of every sealed segment not yet synced (oldest first), then the segment that
   * was current when it was called; entries up to the last one landed then are durable once
   * it returns. Segments sealed after the call are left to the next sync: under sequential
   * writes the loop used to chase them, a checkpoint's sync ran 1.0-1.4 s instead of the
   * ~0.1 s its own 256 MiB take, the index batch grew to its bound meanwhile and every writer
   * waited (backpressure): 0.6-0.8 s with no write answered, every 1.3 s. Under the append
   * lock (a pass, verify, seal) nothing rolls, so that caller gets every sealed segment.
   */
  async syncAll (): Promise<void> {
    const upTo = this.seq // landed: in the file, in a segment at or before the current one
    const last = this.current
    try {
      while (this.unsyncedSealed.length > 0 && this.unsyncedSealed[0].id <= last.id) {
        const oldest = this.unsyncedSealed[0]
        await oldest.sync() // a flush and a checkpoint may both be here: each waits, one removes
        if (this.unsyncedSealed[0] === oldest) {
          this.unsyncedSealed.shift()
          // Its pages are clean copies of the disk now: back to the kernel while they are hot,
          // so the next segment's appends reuse them instead of touching pages the VM's host
          // took back (native-notes/page-cache.md: 419 -> 1357-1497 MiB/s in a plain test).
          // Not awaited: the flush does not wait for advice.
          void oldest.dropCache()
        }
      }
      await last.sync() // a no-op when it rolled and the loop synced it
    } catch (err) {
      // A copy dropped on the way (its fdatasync failed, another's did not) is recorded even
      // so: under Linux its lost writes stay hidden by the page cache, so the next open,
      // finding the copy still named, would compare it with the others, see them equal and
      // keep a copy whose disk holds old bytes (simulation seed 16400036).
      await this.p.segments.recordDrops().catch(() => undefined)
      throw err
    }
    await this.p.segments.recordDrops()
    this.durableSeq = Math.max(this.durableSeq, upTo)
  }
}

/** Whether a write into `segment` that only its full copies failed fails whole, for a roll (MirroredHandle.rollWhenFull). */
function isRollingWhenFull (segment: Segment): boolean {
  return segment.handle instanceof MirroredHandle && segment.handle.rollWhenFull
}

/** Sets isRollingWhenFull; returns whether it was set before. Single copies: false. */
function rollWhenFull (segment: Segment, on: boolean): boolean {
  const h = segment.handle
  if (!(h instanceof MirroredHandle)) return false
  const was = h.rollWhenFull
  h.rollWhenFull = on
  return was
}
