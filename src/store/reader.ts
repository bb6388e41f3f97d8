import path from 'node:path'
import { LogdiskError, isFilesystemFull, isLogdiskError } from '../errors'
import { formatBytes } from '../size-text'
import type { ArchiveLink } from './archive-link'
import { BASELINE_BASE, baselineFiles, readBaselineIndex } from './baseline'
import { firstBadBlock } from './block-check'
import { crc32c } from './crc'
import { readUpTo, roomOf, type FileHandle } from './file-layer'
import { headroomOf, holdsIndex } from './headroom'
import { segmentFileName } from './format'
import { MirroredHandle } from './mirrored-handle'
import { segmentOf, type BlocksRead, type StoreParts, type ReaderPart, type IoOptions } from './parts'
import { Segment } from './segment'
import { SegmentWarmer } from './segment-warmer'
import { CACHE_VOLUME, type SegmentHome } from './segment-home'
import type { VerifyInput } from './verify'

/** Segment handles kept open for reads; older ones are closed (bounded fd use). */
const MAX_OPEN_SEGMENTS = 64
/**
 * Largest run read inline (IoOptions.inline) with a read(2) that may wait for the disk
 * (readNow): a larger read from disk would hold the event loop longer. A larger run read
 * alone still takes at once what the page cache holds (readCached), which never waits.
 */
const INLINE_READ_MAX_BYTES = 128 * 1024
/** An inline read that took longer than this waited for the disk (a cached 4 KiB read(2) takes a few microseconds). */
const INLINE_MISS_MS = 0.05
/** Archived segments kept fetched in <store>/cache at once. */
const MAX_CACHED_SEGMENTS = 8
/**
 * Reads of an archived segment served by range before it is fetched whole (a cold read that
 * arrives as a few FUSE requests stays on ranges; a scan soon takes the whole segment).
 */
const RANGE_READS_PER_SEGMENT = 16
/**
 * readListAt: versions in one local segment at most this many bytes apart are read with one
 * system call (the bytes between them read and dropped: a log entry's header and CRC table
 * between two single-block writes is 68 bytes), in reads of at most GATHER_BYTES.
 */
const GATHER_GAP_BYTES = 32 * 1024
const GATHER_BYTES = 1024 * 1024

/** The rows of blocks with a version at some of the cuts (a block first written after them all has none). */
function withVersions (blocks: Float64Array | Uint32Array, at: Located[]): { blocks: Float64Array | Uint32Array, at: Located[] } {
  const keep: number[] = []
  for (let i = 0; i < blocks.length; i++) if (at.some(x => x.where[i] !== -1)) keep.push(i)
  if (keep.length === blocks.length) return { blocks, at }
  return {
    blocks: Float64Array.from(keep, i => blocks[i]),
    at: at.map(x => ({ where: Float64Array.from(keep, i => x.where[i]), crcs: Uint32Array.from(keep, i => x.crcs[i]) }))
  }
}

/** Where each block of a range is (a log position, BASELINE_BASE + offset, or < 0: zeros) and its CRC. */
export interface Located { where: Float64Array, crcs: Uint32Array }

/**
 * The read side: a block's bytes as of a cut. The newest version at or before the cut comes
 * from the block map, or, for blocks rewritten since, from the index (one reverse seek
 * each); the bytes come from the segment's local copy, another mirror copy when one fails
 * its checksum (F10), the baseline (000 cl. 8), or backing storage when the local copy was
 * punched or removed (004 cl. 16-18). A block whose CRC does not match is never returned.
 *
 * Every read runs in a read epoch (read-epochs.ts), so a pass never makes bytes unreadable
 * under a read that looked them up. Keeps a bounded set of open segment handles and a bounded
 * cache of archived segments fetched back.
 */
export class Reader implements ReaderPart {
  private readonly openSegments = new Map<number, Segment>() // insertion order = LRU order
  private baselineFile: Promise<FileHandle> | undefined
  private readonly cacheOrder: number[] = []
  /** Bytes of fetched copies being written into the cache (makeRoom counts them as taken). */
  private writingBytes = 0
  /** Fetches from backing storage in flight, by segment id. */
  private readonly fetching = new Map<number, Promise<void>>()
  /** Fetched copies being opened, by segment id: how many callers (eviction spares them). */
  private readonly opening = new Map<number, number>()
  /** Reads by range of archived segments (readArchivedRange), by segment id. */
  private readonly rangeRead = new Map<number, number>()
  /**
   * Lookups asked of the index for a deferred map (locateInIndex), all told: a long-lived
   * reader (a clone's parent) reads the map once they add up to what reading it costs.
   */
  private indexLookups = 0
  /** Reads done inline (IoOptions.inline), all told. */
  inlineReads = 0
  /** Reads served at once from the page cache (FileHandle.readCached), in whole or in part. */
  cachedReads = 0
  /** Segments read whole into the page cache because image reads kept missing in them (segment-warmer.ts), all told. */
  get warmedSegments (): number { return this.warmer.warmed }
  /** Whether readCached is worth asking (see CacheProbe). */
  private readonly cacheProbe = new CacheProbe()
  /** Which segments to read whole into the page cache, by the image reads that missed them. */
  private readonly warmer: SegmentWarmer
  /** The warm asked last (they run one after another). */
  private warming: Promise<void> = Promise.resolve()

  constructor (private readonly p: StoreParts) {
    this.warmer = new SegmentWarmer(p.config.segmentBytes, undefined, undefined, p.opts.warmReserveBytes)
  }

  /** Reads the current volume: every block's newest version, from the block map. */
  readCurrent (offset: number, length: number, into?: Buffer, opts?: IoOptions): Promise<Buffer> {
    const map = this.p.map
    const locate = (first: number, n: number): Located => {
      const where = new Float64Array(n)
      const crcs = new Uint32Array(n)
      for (let i = 0; i < n; i++) {
        where[i] = map.position(first + i)
        if (where[i] >= 0) crcs[i] = map.crc(first + i)
      }
      return { where, crcs }
    }
    // A deferred map (a read-only open) is read first; a loaded one answers without a wait.
    return this.readImage(offset, length, into, (first, n) => map.isLoaded ? locate(first, n) : map.loaded().then(() => locate(first, n)), undefined, opts?.inline)
  }

  /** Reads the image as it was at cut `seq` (a snapshot: 000 cl. 10-11). */
  readAt (seq: number, offset: number, length: number, into?: Buffer, opts?: IoOptions, sizeBytes?: number): Promise<Buffer> {
    return this.readImage(offset, length, into, (first, n) => this.locateAt(seq, first, n), undefined, opts?.inline, sizeBytes)
  }

  /**
   * Blocks [first, first+n) as they were at cut `seq`, read like readAt (runs of adjacent
   * blocks in one system call, every block's CRC checked), with where each one was:
   * `where[i] === -1` means never written by the cut (a hole; a clone's parent data when the
   * clone falls through), TRIMMED a trimmed block. What whole-image copies read, in large chunks.
   */
  async readBlocksAt (seq: number, first: number, n: number, into?: Buffer, sizeBytes?: number): Promise<BlocksRead> {
    const B = this.p.config.blockBytes
    let located: Located = { where: new Float64Array(0), crcs: new Uint32Array(0) }
    const zeros = new Uint8Array(n)
    const data = await this.readImage(first * B, n * B, into, async (f, m) => {
      located = await this.locateAt(seq, f, m)
      return located
    }, zeros, false, sizeBytes)
    return { data, where: located.where, zeros, crcs: located.crcs }
  }

  /**
   * Blocks `blocks` (distinct, any order) as they were at cut `seq`, block i's bytes at
   * i * blockBytes of the result: each as readAt reads it (its CRC checked; zeros when
   * trimmed or never written, a clone's parent data when it falls through; a version that
   * fails its check read again the way readAt reads it, from another mirror copy or backing
   * storage), but versions lying near each other in one local segment are read together
   * whatever their block numbers. The blocks an increment changed are scattered over the
   * volume yet mostly were written one after another, so a send reads them in a few large
   * reads instead of one per block (issue 12 item 6).
   */
  async readListAt (seq: number, blocks: Float64Array, sizeBytes?: number): Promise<Buffer> {
    return this.p.reads.guard(async () => {
      this.p.state.assertOpen()
      const { blockBytes: B, segmentBytes } = this.p.config
      const n = blocks.length
      const out = Buffer.allocUnsafe(n * B)
      const [{ where, crcs }] = await this.locateBlocksAt([seq], blocks, false)
      const slot = (i: number): Buffer => out.subarray(i * B, (i + 1) * B)
      /** One block the way readAt reads it. */
      const alone = async (i: number): Promise<void> => {
        await this.readImageNow(blocks[i] * B, B, slot(i), () => ({ where: where.subarray(i, i + 1), crcs: crcs.subarray(i, i + 1) }), undefined, false, sizeBytes)
      }
      // Data in a local segment is gathered; anything else (zeros, a clone's parent, the
      // baseline, an archived segment) is read alone.
      const near: number[] = []
      for (let i = 0; i < n; i++) {
        const pos = where[i]
        if (pos >= 0 && pos < BASELINE_BASE && this.p.segments.stateOf(segmentOf(this.p.config, pos)) !== 'archived') near.push(i)
        else await alone(i)
      }
      near.sort((x, y) => where[x] - where[y])
      let span: Buffer | undefined
      for (let g = 0; g < near.length;) {
        const start = where[near[g]]
        const seg = Math.floor(start / segmentBytes)
        let e = g + 1
        while (e < near.length && Math.floor(where[near[e]] / segmentBytes) === seg &&
          where[near[e]] - (where[near[e - 1]] + B) <= GATHER_GAP_BYTES && where[near[e]] + B - start <= GATHER_BYTES) e++
        if (e - g === 1) {
          await alone(near[g])
          g = e
          continue
        }
        const length = where[near[e - 1]] + B - start
        span ??= Buffer.allocUnsafe(GATHER_BYTES)
        const bytes = span.subarray(0, length)
        const segment = await this.segment(seg)
        const got = await readUpTo(segment.handle, bytes, start % segmentBytes)
        for (let k = g; k < e; k++) {
          const i = near[k]
          const at = where[i] - start
          // Short, or failing its check: read alone, which says what is wrong or recovers it.
          if (at + B <= got && crc32c(bytes.subarray(at, at + B)) === crcs[i]) bytes.copy(out, i * B, at, at + B)
          else await alone(i)
        }
        g = e
      }
      return out
    })
  }

  /**
   * Where blocks [first, first+n) were at cut `seq`. The newest copy is the answer whenever
   * its sequence number is at or before the cut; only blocks rewritten since ask the index,
   * one reverse seek each, whatever the number of snapshots. A new snapshot is listed as soon
   * as its marker is logged, so the first lookup after a cut checkpoints the index through it.
   */
  async locateAt (seq: number, first: number, n: number): Promise<Located> {
    const blocks = new Float64Array(n)
    for (let i = 0; i < n; i++) blocks[i] = first + i
    return (await this.locateBlocksAt([seq], blocks, false))[0]
  }

  /**
   * The blocks that had a version (data or trim) at some of the cuts `seqs`, in block order, a
   * chunk at a time, with where each one was at each cut and its CRC (`at[k]` for `seqs[k]`):
   * the rows locateAt would give for the whole volume less its never-written blocks, in work
   * proportional to the blocks the map holds (a block with a version at a cut is in the map:
   * entries are never removed from it), one map lookup per block for all the cuts.
   */
  async * versionsAt (seqs: number[], chunkBlocks: number, order: 'block' | 'any' = 'block'): AsyncGenerator<{ blocks: Float64Array | Uint32Array, at: Located[] }> {
    if (order === 'any') {
      yield * this.versionsInAnyOrder(seqs, chunkBlocks)
      return
    }
    await this.p.map.loaded() // every block the map holds: all of it
    yield * this.locatedInChunks(seqs, this.p.map.sortedBlocks(), chunkBlocks)
  }

  /** locateBlocksAt's rows for `sorted` (blocks in increasing order), `chunkBlocks` at a time. */
  private async * locatedInChunks (seqs: number[], sorted: Float64Array | Uint32Array, chunkBlocks: number): AsyncGenerator<{ blocks: Float64Array | Uint32Array, at: Located[] }> {
    for (let from = 0; from < sorted.length; from += chunkBlocks) {
      const blocks = sorted.subarray(from, Math.min(sorted.length, from + chunkBlocks))
      yield { blocks, at: await this.locateBlocksAt(seqs, blocks, true) }
    }
  }

  /**
   * versionsAt's rows in no particular order: the map's rows chunk by chunk in its table's
   * order (no sort, no lookup per block), then, in block order, those rewritten since some
   * cut, found in the index (locateBlocksAt). Should the table move its rows meanwhile (it
   * grew under writes), the blocks not yet given follow in block order, as versionsAt's.
   */
  private async * versionsInAnyOrder (seqs: number[], chunkBlocks: number): AsyncGenerator<{ blocks: Float64Array | Uint32Array, at: Located[] }> {
    const map = this.p.map
    await map.loaded() // every block the map holds: all of it
    const newest = Math.max(...seqs)
    const oldest = Math.min(...seqs)
    if (this.p.index.last.seq < newest) await this.p.index.checkpointThrough(newest) // first read after a cut
    const layout = map.layout
    const given: Float64Array[] = []
    const later: number[] = [] // blocks whose newest version is past some cut: they ask the index
    const rows = { keys: new Float64Array(chunkBlocks), positions: new Float64Array(chunkBlocks), crcs: new Uint32Array(chunkBlocks), seqs: new Float64Array(chunkBlocks) }
    for (let slot = 0; ;) {
      if (map.layout !== layout) {
        // Rows moved: what was not given yet, in block order.
        const seen = new Set<number>()
        for (const g of given) for (const b of g) seen.add(b)
        for await (const { blocks, at } of this.locatedInChunks(seqs, map.sortedBlocks().filter(b => !seen.has(b)), chunkBlocks)) yield withVersions(blocks, at)
        return
      }
      const { n, next } = map.rowsFrom(slot, rows)
      slot = next
      if (n === 0) break
      const blocks = new Float64Array(n)
      const at = seqs.map(() => ({ where: new Float64Array(n), crcs: new Uint32Array(n) }))
      let m = 0
      for (let i = 0; i < n; i++) {
        if (rows.seqs[i] > oldest) {
          later.push(rows.keys[i])
          continue
        }
        blocks[m] = rows.keys[i]
        for (let k = 0; k < seqs.length; k++) {
          at[k].where[m] = rows.positions[i] // data, or TRIMMED: zeros
          at[k].crcs[m] = rows.crcs[i]
        }
        m++
      }
      if (m === 0) continue
      const chunk = { blocks: blocks.subarray(0, m), at: at.map(x => ({ where: x.where.subarray(0, m), crcs: x.crcs.subarray(0, m) })) }
      given.push(chunk.blocks)
      yield chunk
    }
    for await (const { blocks, at } of this.locatedInChunks(seqs, Float64Array.from(later).sort(), chunkBlocks)) yield withVersions(blocks, at)
  }

  /**
   * Where each of `blocks` was at each cut of `seqs` (-1: no version by then) and its CRC.
   * Blocks rewritten since a cut ask the index: `walk` (a walk of every block, blocks in
   * increasing order) through one iterator seeking from block to block, else (a read) one
   * lookup per block, all at once.
   */
  async locateBlocksAt (seqs: number[], blocks: Float64Array | Uint32Array, walk: boolean): Promise<Located[]> {
    const map = this.p.map
    const n = blocks.length
    const out = seqs.map(() => ({ where: new Float64Array(n), crcs: new Uint32Array(n) }))
    const newest = Math.max(...seqs)
    if (this.p.index.last.seq < newest) await this.p.index.checkpointThrough(newest) // first read after a cut
    if (!map.isLoaded && fewForTheIndex(this.indexLookups + n * seqs.length, map.count)) {
      this.indexLookups += n * seqs.length
      return await this.locateInIndex(seqs, blocks, out)
    }
    await map.loaded()
    const rewritten = seqs.map(() => [] as number[]) // per cut: indexes of blocks rewritten since it
    const v = new Float64Array(3) // position, seq, crc
    for (let i = 0; i < n; i++) {
      const mapped = map.lookup(blocks[i], v)
      for (let k = 0; k < seqs.length; k++) {
        const { where, crcs } = out[k]
        if (!mapped) {
          where[i] = -1 // never written at all, so not at the cut either
        } else if (v[1] <= seqs[k]) {
          where[i] = v[0] // data, or TRIMMED: zeros
          crcs[i] = v[2]
        } else {
          rewritten[k].push(i)
        }
      }
    }
    for (let k = 0; k < seqs.length; k++) {
      if (rewritten[k].length === 0) continue
      const ask = rewritten[k].map(i => blocks[i])
      const found = walk ? await this.p.db.versionsAt(ask, seqs[k]) : await Promise.all(ask.map(b => this.p.db.versionAt(b, seqs[k])))
      for (let j = 0; j < found.length; j++) {
        const i = rewritten[k][j]
        out[k].where[i] = found[j]?.position ?? -1
        out[k].crcs[i] = found[j]?.crc ?? 0
      }
    }
    return out
  }

  /**
   * locateBlocksAt from the index alone, for a map that is still deferred: one lookup per block
   * and cut. The map is deferred only while nothing was replayed past the index's checkpoint,
   * so the index's newest version of a block is the map's.
   */
  private async locateInIndex (seqs: number[], blocks: Float64Array | Uint32Array, out: Located[]): Promise<Located[]> {
    // In block order, through one iterator per cut (an iterator per block cost 5x as much).
    const order = Array.from(blocks.keys()).sort((a, b) => blocks[a] - blocks[b])
    const ask = order.map(i => blocks[i])
    for (let k = 0; k < seqs.length; k++) {
      const found = await this.p.db.versionsAt(ask, seqs[k])
      for (let j = 0; j < found.length; j++) {
        out[k].where[order[j]] = found[j]?.position ?? -1
        out[k].crcs[order[j]] = found[j]?.crc ?? 0
      }
    }
    return out
  }

  private readImage (offset: number, length: number, into: Buffer | undefined, locate: (first: number, n: number) => Located | Promise<Located>, zeros?: Uint8Array, inline = false, sizeBytes?: number): Promise<Buffer> {
    return this.p.reads.guard(() => this.readImageNow(offset, length, into, locate, zeros, inline, sizeBytes))
  }

  /**
   * `zeros` (one per block of the range), when given, gets a 1 for each block filled with zeros unread.
   * `sizeBytes`: where the image ends (a snapshot's or a past point's size, Store.sizeAt); the
   * volume's current size when not given.
   */
  private async readImageNow (offset: number, length: number, into: Buffer | undefined, locate: (first: number, n: number) => Located | Promise<Located>, zeros?: Uint8Array, inline = false, sizeBytes = this.p.config.sizeBytes): Promise<Buffer> {
    this.p.state.assertOpen()
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new LogdiskError('BAD_ARGUMENT', `bad read range ${offset}+${length}`)
    }
    const { blockBytes: B, segmentBytes } = this.p.config
    length = Math.max(0, Math.min(length, sizeBytes - offset))
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    if (length === 0) return out
    const first = Math.floor(offset / B)
    const n = Math.ceil((offset + length) / B) - first
    const { where, crcs } = await locate(first, n)
    // Blocks that lie next to each other in one segment are read with one system call.
    for (let i = 0; i < n;) {
      let run = 1
      if (where[i] < 0) {
        // Never written (-1) or trimmed (TRIMMED): zeros, or for never written the clone's parent.
        const unwritten = where[i] === -1
        while (i + run < n && where[i + run] < 0 && (where[i + run] === -1) === unwritten) run++
        const fallThrough = this.p.opts.fallThrough
        const parent = unwritten && fallThrough ? await fallThrough((first + i) * B, run * B) : null
        this.copyOut(parent, first + i, run, offset, out)
        if (!parent) zeros?.fill(1, i, i + run)
      } else {
        const seg = Math.floor(where[i] / segmentBytes)
        while (i + run < n && where[i + run] === where[i] + run * B && Math.floor(where[i + run] / segmentBytes) === seg) run++
        // Whole blocks of the request are read straight into it (no copy); edge blocks of an
        // unaligned request are read apart and copied in part.
        const at = (first + i) * B - offset
        const into = at >= 0 && at + run * B <= out.length ? out.subarray(at, at + run * B) : undefined
        const data = await this.readRun(first + i, run, where[i], crcs.subarray(i, i + run), into, inline, true)
        if (data !== into) this.copyOut(data, first + i, run, offset, out)
      }
      i += run
    }
    return out
  }

  /** Copies the part of blocks [block, block+run) that overlaps the request; null = zeros. */
  private copyOut (data: Buffer | null, block: number, run: number, offset: number, out: Buffer): void {
    const B = this.p.config.blockBytes
    const from = Math.max(offset, block * B)
    const to = Math.min(offset + out.length, (block + run) * B)
    if (data) data.copy(out, from - offset, from - block * B, to - block * B)
    else out.fill(0, from - offset, to - offset)
  }

  /**
   * Reads `run` blocks stored contiguously from `pos` and checks each block's CRC. Callers
   * outside a read (passes) hold the maintenance lock, so nothing punches what they read.
   * `image`: a read of an image (not a pass's), whose misses count towards warming its
   * segment (missedIn).
   */
  async readRun (block: number, run: number, pos: number, crcs: Uint32Array, into?: Buffer, inline = false, image = false): Promise<Buffer> {
    const { blockBytes: B, segmentBytes } = this.p.config
    let handle: FileHandle
    let file: string
    let offset: number
    let local = false // read from a local copy (not the baseline, not a copy fetched back)
    let segment: Segment | undefined
    if (pos >= BASELINE_BASE) {
      handle = await this.baselineHandle()
      file = baselineFiles(this.p.dir).image
      offset = pos - BASELINE_BASE
    } else {
      const id = segmentOf(this.p.config, pos)
      // Only an archived segment can be read by range: a local read does not pay an await for it.
      if (this.p.segments.stateOf(id) === 'archived') {
        const ranged = await this.readArchivedRange(id, pos % segmentBytes, crcs.subarray(0, run), into)
        if (ranged) return ranged
      }
      segment = await this.segment(id)
      handle = segment.handle
      file = segment.file
      local = !segment.volumes.includes(CACHE_VOLUME)
      offset = pos % segmentBytes
    }
    const data = into ?? Buffer.allocUnsafe(run * B)
    let got = 0
    if (inline && handle.readNow !== undefined && data.length <= INLINE_READ_MAX_BYTES) {
      // Nothing else waits (IoOptions.inline): a read(2) right here spares the thread
      // pool's two hand-offs, the larger part of a cached 4 KiB read's time on this path.
      let n = -1
      const t0 = image ? performance.now() : 0
      while (got < data.length && n !== 0) got += (n = handle.readNow(data, got, data.length - got, offset + got))
      this.inlineReads++
      // A read(2) served by the page cache takes a few microseconds, one that waits for the disk hundreds.
      if (image && local && performance.now() - t0 > INLINE_MISS_MS) this.missedIn(segment!)
    } else if (handle.readCached !== undefined && (inline || data.length <= INLINE_READ_MAX_BYTES) && this.cacheProbe.ask()) {
      // Others wait, or a larger read alone: what the page cache holds is still read right
      // here (it cannot wait for a disk), sparing the thread pool's hand-offs; the rest goes
      // through the pool. Alone, a larger read costs the event loop nothing else: ext4 on a
      // buffered loop device reads one request at a time, and 1 MiB sequential reads went
      // from 1,822-1,905 to 2,195-2,567 MB/s with it.
      got = handle.readCached(data, 0, data.length, offset)
      this.cacheProbe.found(got === data.length)
      if (got > 0) this.cachedReads++
    }
    if (got < data.length && image && local && data.length <= INLINE_READ_MAX_BYTES) this.missedIn(segment!)
    // A copy cut short after it was sealed (truncated) ends before the data: damage, like a
    // checksum that fails, and another copy may hold the bytes.
    let short = false
    while (got < data.length) {
      const n = await handle.read(data, got, data.length - got, offset + got)
      if (n === 0) { short = true; break }
      got += n
    }
    const bad = short ? Math.floor(got / B) : firstBadBlock(data, crcs, B)
    if (bad >= 0) {
      // A mirrored segment: another copy may hold the good bytes (F10).
      if (handle instanceof MirroredHandle) {
        for (let c = 1; c < handle.copies.length; c++) {
          const again = Buffer.allocUnsafe(run * B)
          const n = await handle.readCopy(c, again, 0, again.length, offset).catch(() => 0)
          if (n === again.length && firstBadBlock(again, crcs, B) < 0) {
            this.p.logger.error({ file, block: block + bad }, `a copy of a mirrored segment ${short ? 'ends before its data' : 'fails its checksum'}; served from another copy (run logdisk verify, then pool repair)`)
            return again
          }
        }
      }
      const id = segmentOf(this.p.config, pos)
      // A fetched copy emptied under this read (evictCached truncates a copy before it deletes
      // it, so that its room is free at once, not when the last handle closes): fetched again.
      const evicted = short && segment !== undefined && !local && !this.cacheOrder.includes(id)
      if (short && !evicted) throw new LogdiskError('CORRUPT', `${file} ends before block ${block + bad}'s data`)
      // Compaction punches dead data out of archived segments: old versions come back
      // from backing storage (restores at old points, old snapshots). A local handle may
      // also be one taken just before archiving removed the segment's local copy.
      if ((local || evicted) && this.p.segments.isArchived(id)) {
        const archived = await this.fetchArchived(id)
        const again = Buffer.allocUnsafe(run * B)
        const got = await readUpTo(archived.handle, again, offset)
        await archived.close()
        if (got === again.length && firstBadBlock(again, crcs, B) < 0) return again
      }
      throw new LogdiskError('CORRUPT', `block ${block + bad} fails its checksum in ${file} at offset ${offset + bad * B}; run logdisk verify`)
    }
    return data
  }

  /** A small image read that the page cache did not serve (whole) from `segment`: warm it when the warmer says so. */
  private missedIn (segment: Segment): void {
    if (segment === this.p.log.current || segment.handle.warmCache === undefined || !this.warmer.missed(segment.id)) return
    // One at a time: each holds a thread of the pool the reads need while the kernel queues its pages.
    const handle = segment.handle
    this.warming = this.warming.then(() => handle.warmCache!()).catch(() => undefined)
  }

  /**
   * A cold read of an archived segment (the caller checked that it is archived; docs/REPLICATION.md "Range fetch for cold reads"):
   * the first RANGE_READS_PER_SEGMENT reads of a segment that is neither open nor cached nor
   * being fetched read only their run's bytes through the link, when the link can (a framed
   * object on a replica, a few decoded frames kept there); later ones fetch the segment whole
   * (into the cache), as every read did before, so that a scan does not go frame by frame.
   * undefined: read it the usual way (that also reports a checksum mismatch, after fetching
   * the segment whole).
   */
  private async readArchivedRange (id: number, offset: number, crcs: Uint32Array, into?: Buffer): Promise<Buffer | undefined> {
    const link = this.p.opts.archive
    if (!link?.getRange || this.openSegments.has(id) || this.cacheOrder.includes(id) || this.fetching.has(id)) return undefined
    const reads = this.rangeRead.get(id) ?? 0
    if (reads >= RANGE_READS_PER_SEGMENT) return undefined
    this.rangeRead.set(id, reads + 1)
    if (this.rangeRead.size > MAX_CACHED_SEGMENTS * 64) this.rangeRead.delete(this.rangeRead.keys().next().value!)
    const B = this.p.config.blockBytes
    // A damaged frame (CORRUPT) is reported by the whole fetch, with the object's checksum.
    const data = await link.getRange(id, offset, crcs.length * B).catch(err => { if (isLogdiskError(err, 'CORRUPT')) return undefined; throw unfetchable(id, err) })
    if (!data || data.length !== crcs.length * B || firstBadBlock(data, crcs, B) >= 0) return undefined
    if (!into) return data
    data.copy(into)
    return into
  }

  /** Reads one block as it was at cut `seq` (zeros if it was never written by then). */
  async readBlockAt (seq: number, block: number): Promise<Buffer> {
    await this.p.index.checkpointThrough(seq)
    return this.p.reads.guard(async () => {
      const at = await this.p.db.versionAt(block, seq)
      if (!at || at.position < 0) return Buffer.alloc(this.p.config.blockBytes) // never written, or trimmed
      return this.readRun(block, 1, at.position, Uint32Array.of(at.crc))
    })
  }

  /**
   * The image as it was at sequence `seq`, block by block in block order: for every block the
   * newest version at or before seq, rebuilt from the index of every version (004 cl. 10).
   * Never-written blocks are skipped (holes).
   */
  async * imageAt (seq: number): AsyncGenerator<{ block: number, data: Buffer }> {
    await this.p.index.checkpointThrough(seq)
    // One read epoch for the whole walk: the positions come from one view of the index.
    const epoch = this.p.reads.enter()
    try {
      let block = -1
      let best: { position: number, crc: number } | undefined
      const crc = new Uint32Array(1)
      // A block trimmed at the point is a hole, like one never written.
      for await (const [b, vseq, position, vcrc] of this.p.db.history()) {
        if (b !== block) {
          if (best && best.position >= 0) { crc[0] = best.crc; yield { block, data: await this.readRun(block, 1, best.position, crc) } }
          block = b
          best = undefined
        }
        if (vseq <= seq) best = { position, crc: vcrc }
      }
      if (best && best.position >= 0) { crc[0] = best.crc; yield { block, data: await this.readRun(block, 1, best.position, crc) } }
    } finally {
      this.p.reads.exit(epoch)
    }
  }

  /**
   * Each block's checksum as it was at cut `seq`, in block order, from the index alone (no
   * data read); never-written blocks are skipped.
   */
  async * blockCrcsAt (seq: number): AsyncGenerator<[block: number, crc: number]> {
    await this.p.index.checkpointThrough(seq)
    let block = -1
    let crc: number | undefined
    // A block trimmed at the cut is absent, like one never written (it reads as zeros).
    for await (const [b, vseq, position, vcrc] of this.p.db.history()) {
      if (b !== block) {
        if (crc !== undefined) yield [block, crc]
        block = b
        crc = undefined
      }
      if (vseq <= seq) crc = position < 0 ? undefined : vcrc
    }
    if (crc !== undefined) yield [block, crc]
  }

  /** The baseline as verify reads it, if there is one. */
  async baselineForVerify (): Promise<VerifyInput['baseline']> {
    const idx = await readBaselineIndex(this.p.layer, this.p.dir, this.p.config.uuid)
    if (!idx) return undefined
    const handle = await this.baselineHandle()
    const B = this.p.config.blockBytes
    return {
      blocks: idx.blocks,
      base: BASELINE_BASE,
      read: async block => {
        const buf = Buffer.alloc(B)
        await readUpTo(handle, buf, block * B) // past its end the baseline reads as zeros, as the image does
        return buf
      }
    }
  }

  /**
   * The baseline image, opened once: created by a writable open (the first merge writes into
   * it), only opened by a read-only one (verify, restore, export and send on an unmounted
   * store), whose file layer refuses a mkdir or a create in the store.
   */
  baselineHandle (): Promise<FileHandle> {
    this.baselineFile ??= (async () => {
      const { dir, image } = baselineFiles(this.p.dir)
      if (this.p.opts.readOnly !== undefined) return this.p.layer.open(image, false)
      await this.p.layer.mkdirp(dir)
      return this.p.layer.open(image, true)
    })().catch(err => {
      this.baselineFile = undefined // the next use tries again
      throw err
    })
    return this.baselineFile
  }

  /** An open handle of segment `id`: local copies, or fetched back from backing storage. */
  async segment (id: number): Promise<Segment> {
    let segment = this.openSegments.get(id)
    if (segment) {
      this.openSegments.delete(id)
      this.openSegments.set(id, segment)
      return segment
    }
    const { segments, layer, home, geometry, logger } = this.p
    const volumes = segments.volumesOf(id)
    if (segments.stateOf(id) === 'archived') segment = await this.fetchArchived(id)
    else if (!volumes) throw new LogdiskError('CORRUPT', `the index points at segment ${id}, which the store does not have`)
    else segment = await Segment.open(layer, home, volumes, id, geometry, logger, segments.dropHandler(id))
    const raced = this.openSegments.get(id)
    if (raced) {
      await segment.close()
      return raced
    }
    this.openSegments.set(id, segment)
    for (const [oldId, old] of this.openSegments) {
      if (this.openSegments.size <= (this.p.opts.maxOpenSegments ?? MAX_OPEN_SEGMENTS)) break
      if (old === this.p.log.current || old.unsynced) continue // an unsynced segment is synced before it closes
      this.openSegments.delete(oldId)
      // A pass may be reading this whole segment (archiving it): wait for passes as well.
      // Found by the simulation with few open handles (seeds 2, 3 and 11 read a closed
      // handle: EBADF).
      this.closeWhenIdle(old, true)
    }
    return segment
  }

  /** Keeps a segment the log just created among the open handles. */
  adoptOpen (segment: Segment): void {
    this.openSegments.set(segment.id, segment)
  }

  /** Drops the cached handle of a segment (kept open a little for reads in flight). */
  forgetHandle (id: number): void {
    const old = this.openSegments.get(id)
    if (!old) return
    this.openSegments.delete(id)
    // Called by passes themselves (waiting for passes would wait for the caller).
    this.closeWhenIdle(old, false)
  }

  /**
   * Closes a handle dropped from the cache once nothing can still use it: reads in flight
   * that found it (a second read(2) of a short read, a mirror retry) are done, and, with
   * `afterPasses`, no pass runs. An unsynced segment (sealed, waiting for the next flush's
   * fdatasync) is synced first.
   */
  private closeWhenIdle (old: Segment, afterPasses: boolean): void {
    const passes = afterPasses ? this.p.lifeCycle.maintenance.run(async () => undefined) : undefined
    Promise.all([this.p.reads.drain(), passes])
      .then(() => old.unsynced ? old.sync() : undefined)
      .then(() => old.close())
      .catch(() => undefined)
  }

  /**
   * Brings an archived segment back from backing storage into <store>/cache (bounded: the
   * oldest fetched copies are deleted past MAX_CACHED_SEGMENTS) and opens it. Restores and
   * reads of old snapshots work with archived segments this way (004 cl. 16-18).
   */
  async fetchArchived (id: number): Promise<Segment> {
    const link = this.p.opts.archive
    if (!link) throw new LogdiskError('IO', `segment ${id} is archived, and no archive target is configured (logdisk policy set ${this.p.dir} archive.target=...)`)
    // Pinned until its file is open: another fetch that finishes meanwhile evicts the oldest
    // copies, and one deleted under this open failed ENOENT (simulation seed 16800056: a read
    // of current data failed while other reads went through nine archived segments).
    this.opening.set(id, (this.opening.get(id) ?? 0) + 1)
    try {
      return await this.fetchAndOpen(id, link)
    } finally {
      const n = this.opening.get(id)! - 1
      if (n === 0) this.opening.delete(id)
      else this.opening.set(id, n)
    }
  }

  private async fetchAndOpen (id: number, link: ArchiveLink): Promise<Segment> {
    const layer = this.p.layer
    const cache = this.cacheHome()
    const dir = cache.dirOf(CACHE_VOLUME)
    const file = path.join(dir, segmentFileName(id))
    // Concurrent reads of one archived segment share one fetch: two fetches into the same
    // `.fetch` file would truncate and rename it under each other (ENOENT, torn copies).
    let fetching = this.cacheOrder.includes(id) ? undefined : this.fetching.get(id)
    if (!this.cacheOrder.includes(id) && !fetching) {
      fetching = (async () => {
        const data = await link.get(id).catch(err => { throw unfetchable(id, err) })
        await layer.mkdirp(dir).catch(err => { throw uncacheable(id, dir, err) })
        await this.makeRoom(dir, data.length, id)
        this.writingBytes += data.length
        try {
          await this.writeFetched(file, data)
        } catch (err) {
          // No room after all (another program wrote meanwhile, or the filesystem cannot say):
          // the partial file is gone (writeFetched); every copy not in use makes way, once.
          if (!isFilesystemFull(err) && !isLogdiskError(err, 'NO_SPACE')) throw uncacheable(id, dir, err)
          await this.evictCached(dir, this.cacheOrder.length)
          await this.writeFetched(file, data).catch(err => { throw uncacheable(id, dir, err) })
        } finally {
          this.writingBytes -= data.length
        }
        this.cacheOrder.push(id)
        await this.evictCached(dir, this.cacheOrder.length - MAX_CACHED_SEGMENTS)
      })().finally(() => this.fetching.delete(id))
      this.fetching.set(id, fetching)
    }
    await fetching
    return Segment.open(layer, cache, [CACHE_VOLUME], id, this.p.geometry, this.p.logger)
  }

  /** Writes a fetched segment into the cache under a temporary name, renamed once whole; on failure no partial file stays. */
  private async writeFetched (file: string, data: Buffer): Promise<void> {
    const layer = this.p.layer
    const tmp = `${file}.fetch`
    try {
      const h = await layer.open(tmp, true)
      try {
        await h.truncate(0)
        await h.writev([data], 0)
      } finally {
        await h.close()
      }
      await layer.rename(tmp, file)
    } catch (err) {
      await layer.remove(tmp).catch(() => undefined)
      throw err
    }
  }

  /**
   * Deletes up to `n` of the oldest fetched copies that no open waits for (a read holding
   * one keeps its open handle). Resolves once their files are gone.
   */
  private async evictCached (dir: string, n: number): Promise<void> {
    const gone: Array<Promise<void>> = []
    for (let k = 0; k < n; k++) {
      const at = this.cacheOrder.findIndex(o => !this.opening.has(o))
      if (at < 0) break // all being opened: over the bound until a later fetch evicts
      const old = this.cacheOrder.splice(at, 1)[0]
      this.forgetHandle(old)
      gone.push(this.dropCached(path.join(dir, segmentFileName(old))))
    }
    await Promise.all(gone)
  }

  /**
   * Deletes a fetched copy, emptied first: a handle still open on it (forgetHandle closes it
   * only once the reads in flight are done, the read that needs the room among them) would
   * otherwise keep its blocks taken, and the room asked for would never come (a 14 MiB tmpfs:
   * three copies evicted, none freed, the read failed). A read still on it finds it short and
   * fetches the segment again (readRun).
   */
  private async dropCached (file: string): Promise<void> {
    const layer = this.p.layer
    try {
      const h = await layer.open(file, false)
      try { await h.truncate(0) } finally { await h.close() }
    } catch { /* gone already, or cannot be emptied: removed all the same */ }
    await layer.remove(file).catch(() => undefined)
  }

  /**
   * Makes room in the cache for a copy of `bytes`: the cache never takes the store's
   * filesystem below its headroom (filesystemHeadroom: what the pool leaves free there, at
   * least twice the 4 MiB a command that writes needs), so the index's checkpoints and the
   * daemon's log still have room (helper-85: fetched copies filled a 14 MiB filesystem and
   * every later read of archived data and every checkpoint failed with ENOSPC). The oldest
   * copies not in use are deleted first; when even an empty cache leaves too little, the
   * fetch fails (IO: the read is EIO) and writes nothing.
   */
  private async makeRoom (dir: string, bytes: number, id: number): Promise<void> {
    for (;;) {
      const room = await roomOf(this.p.layer, dir)
      if (room === undefined) return // unknown: the write says
      const reserve = headroomOf(room.totalBytes, holdsIndex(dir, path.join(this.p.dir, 'index')))
      // Other fetches writing meanwhile take their room too (statfs counts only what they wrote).
      if (room.freeBytes - this.writingBytes - bytes >= reserve) return
      const before = this.cacheOrder.length
      await this.evictCached(dir, 1)
      if (this.cacheOrder.length === before) {
        throw new LogdiskError('IO', `segment ${id} is archived, and there is no room to fetch it back into ${dir}: ${formatBytes(room.freeBytes)} free on its filesystem, and the fetched copy (${formatBytes(bytes)}) would leave less than the ${formatBytes(reserve)} kept free there for the index and logs; free some space there`)
      }
    }
  }

  private cacheHome (): SegmentHome {
    const opts = this.p.opts
    const dir = opts.readOnly ? path.join(opts.readOnly.scratchDir, 'cache') : path.join(this.p.dir, 'cache')
    return { dirOf: () => dir, volumes: () => [CACHE_VOLUME], place: async () => [CACHE_VOLUME], occupied () {}, vacated () {}, stillSuits: () => false }
  }

  /** Closes every handle (the store is closing). */
  async closeAll (): Promise<void> {
    if (this.baselineFile) await this.baselineFile.then(h => h.close()).catch(() => undefined)
    for (const segment of this.openSegments.values()) await segment.close().catch(() => undefined)
    this.openSegments.clear()
  }
}

/**
 * Whether `lookups` index lookups (all those of the open so far) cost less than reading a
 * deferred map of `mapped` blocks:
 * an index lookup took tens of microseconds, the map's first touch of fresh memory about a
 * microsecond per block (the 28-byte slots of a table at most 70% full); so a few thousand
 * blocks of a large map (an incremental send's) ask the index, a walk of all reads the map.
 */
function fewForTheIndex (lookups: number, mapped: number): boolean {
  return lookups <= Math.max(256, mapped / 64)
}

/**
 * Whether a read should first ask the page cache (FileHandle.readCached), judged by how often
 * that found the whole range lately. A miss is not free: preadv2(RWF_NOWAIT) starts the
 * kernel's readahead for the range on the event loop before it answers EAGAIN, and the read
 * then waits in the thread pool anyway. Measured, random 4 KiB reads at depth 16 of a store
 * read once before (cached): 19,000 -> 27,600 IOPS asking every time; right after
 * drop_caches (mostly misses): 13,300 -> 11,200. So below a hit rate of 1 in 4 only one read
 * in 8 asks, which keeps the rate current for when the cache warms up.
 */
class CacheProbe {
  /** Hits among recent asks, an exponential average (weight 1/16 for the newest). */
  private rate = 1
  private skipped = 0

  ask (): boolean {
    if (this.rate >= 0.25) return true
    if (++this.skipped < 8) return false
    this.skipped = 0
    return true
  }

  found (hit: boolean): void {
    this.rate += ((hit ? 1 : 0) - this.rate) / 16
  }
}

/**
 * A fetched copy that cannot be written into the cache (no room, the directory not writable):
 * the read fails with IO (EIO), as other read failures do, not with the cache's own ENOSPC
 * (a reader got "No space left on device" from read(2): helper-85).
 */
function uncacheable (id: number, dir: string, err: unknown): LogdiskError {
  if (isLogdiskError(err, 'IO')) return err
  return new LogdiskError('IO', `segment ${id} is archived, and fetching it back into ${dir} failed: ${(err as Error).message}`, err)
}

/**
 * The error for archived segment `id` whose fetch failed with `err`. An object its target does
 * not have (an older copy of the archive or replica directory put back) is data the store
 * cannot read: an I/O error to whoever reads it (EIO at the image, logged), not NOT_FOUND,
 * which names something the caller asked for; read(2) of current.img failed with ENOENT
 * (found by a hostile test, 2026-12-06).
 */
function unfetchable (id: number, err: unknown): unknown {
  return isLogdiskError(err, 'NOT_FOUND') ? new LogdiskError('IO', `segment ${id} is archived, but ${(err as Error).message}`, err) : err
}
