import fs from 'node:fs'
import path from 'node:path'
import { pack } from 'msgpackr'
import { LogdiskError, fromSystemError } from '../errors'
import { BlockMap } from './block-map'
import { CONFIG_FILE, newConfig, readConfig, writeConfig, type CreateOptions, type StoreConfig } from './config'
import { crc32c } from './crc'
import { encodeMarker, encodeWriteHeader } from './entry'
import { nodeFileLayer, type FileLayer } from './file-layer'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, EntryKind, MAX_ENTRY_BLOCKS, SEGMENT_HEADER_BYTES } from './format'
import { IndexBatch, IndexDb, type Checkpoint } from './index-db'
import { silentLogger, type Logger } from './logger'
import { Mutex } from './mutex'
import { recover, type RecoveryReport } from './recovery'
import { Segment, type SegmentGeometry } from './segment'
import { verifyStore, type VerifyReport } from './verify'

export interface OpenOptions {
  /** The disk the segments live on; tests pass a simulated one. */
  fileLayer?: FileLayer
  logger?: Logger
  /** How often completed appends are checkpointed into the LevelDB index. */
  checkpointIntervalMs?: number
  /** Checkpoint early once this many block versions wait for the index. */
  checkpointMaxBlocks?: number
  /** Who holds the store, recorded for the "store is in use" error of other processes. */
  holder?: string
}

export interface StoreStatus {
  dir: string
  sizeBytes: number
  blockBytes: number
  segmentBytes: number
  /** Distinct blocks ever written (live data of the current volume). */
  writtenBytes: number
  /** Bytes appended to the log, headers included. */
  logBytes: number
  segments: Record<'current' | 'active' | 'inactive' | 'archived' | 'recycled', number>
  index: { seq: number, position: number, checkpointSeq: number, checkpointPosition: number, pendingBlocks: number }
  mapMemoryBytes: number
  recovery: RecoveryReport
}

const SEGMENT_DIR = 'segments'
const INDEX_DIR = 'index'
const HOLDER_FILE = 'holder.json'
/** Segment handles kept open for reads; older ones are closed (bounded fd use). */
const MAX_OPEN_SEGMENTS = 64

/**
 * A virtual disk: an append-only log of equal-size segments (004 cl. 2-6) plus the index of
 * each block's newest copy. This is the library; it knows nothing of FUSE or the command line.
 *
 * Contract (after s3backer's s3backer.h): reads of never-written blocks return zeros; I/O past
 * the end throws OUT_OF_RANGE and changes nothing; a block whose CRC does not match is never
 * returned (CORRUPT); after flush() resolves, every write that resolved before it survives
 * kill -9 and power loss; an unsynced write may be lost but is never torn.
 */
export class Store {
  private readonly appendLock = new Mutex()
  private readonly openSegments = new Map<number, Segment>() // insertion order = LRU order
  private batch = new IndexBatch()
  private checkpointing: Promise<void> | undefined
  private lastCheckpoint: Checkpoint
  private timer: NodeJS.Timeout | undefined
  private closed = false
  /** Log position just past the last completed append. */
  private completedPosition: number

  private constructor (
    readonly dir: string,
    readonly config: StoreConfig,
    private readonly layer: FileLayer,
    private readonly index: IndexDb,
    private readonly map: BlockMap,
    private current: Segment,
    private segmentIds: number[],
    private seq: number,
    readonly recovery: RecoveryReport,
    private readonly log: Logger,
    private readonly opts: OpenOptions
  ) {
    this.openSegments.set(current.id, current)
    this.completedPosition = this.positionOf(current.id, current.tail)
    this.lastCheckpoint = { seq, position: this.completedPosition, timeMs: Date.now() }
    const interval = opts.checkpointIntervalMs ?? 1000
    if (interval > 0) {
      this.timer = setInterval(() => { this.checkpoint().catch(err => this.log.error({ err: (err as Error).message }, 'index checkpoint failed; will retry')) }, interval)
      this.timer.unref()
    }
  }

  static async create (dir: string, opts: CreateOptions, layer: FileLayer = nodeFileLayer): Promise<StoreConfig> {
    const config = newConfig(opts)
    if (fs.existsSync(path.join(dir, CONFIG_FILE))) {
      throw new LogdiskError('STORE_EXISTS', `a store already exists at ${dir}`)
    }
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
      throw new LogdiskError('BAD_ARGUMENT', `${dir} is not empty; give a new or empty directory for the store`)
    }
    try {
      fs.mkdirSync(dir, { recursive: true })
      fs.mkdirSync(path.join(dir, INDEX_DIR))
    } catch (err) {
      throw fromSystemError(err, `create ${dir}`)
    }
    await layer.mkdirp(path.join(dir, SEGMENT_DIR))
    writeConfig(dir, config) // last: a directory without store.json is not a store
    return config
  }

  static async open (dir: string, opts: OpenOptions = {}): Promise<Store> {
    const config = readConfig(dir)
    const layer = opts.fileLayer ?? nodeFileLayer
    const log = opts.logger ?? silentLogger
    let index: IndexDb
    try {
      index = await IndexDb.open(path.join(dir, INDEX_DIR))
    } catch (err) {
      if (err instanceof LogdiskError && err.code === 'STORE_LOCKED') throw lockedError(dir, err)
      throw err
    }
    try {
      const map = new BlockMap()
      const geometry: SegmentGeometry = { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes }
      const segmentDir = path.join(dir, SEGMENT_DIR)
      await layer.mkdirp(segmentDir)
      const recovered = await recover(layer, dir, segmentDir, geometry, index, map, log)
      const known = [...(await index.segments()).keys()]
      const ids = [...new Set([...known, ...recovered.segments])].filter(id => id <= recovered.current.id).sort((a, b) => a - b)
      writeHolder(dir, opts.holder)
      return new Store(dir, config, layer, index, map, recovered.current, ids, recovered.seq, recovered.report, log, opts)
    } catch (err) {
      await index.close()
      throw err
    }
  }

  get sizeBytes (): number { return this.config.sizeBytes }
  get blockBytes (): number { return this.config.blockBytes }
  private get segmentDir (): string { return path.join(this.dir, SEGMENT_DIR) }

  private positionOf (segmentId: number, offset: number): number {
    return segmentId * this.config.segmentBytes + offset
  }

  private assertOpen (): void {
    if (this.closed) throw new LogdiskError('CLOSED', `store ${this.dir} is closed`)
  }

  /**
   * Reads `length` bytes at `offset` into `into` (or a new buffer). Reads stop at the end of the
   * volume: the returned buffer is shorter then. Runs of blocks that lie next to each other in
   * the log are read with one system call.
   */
  async read (offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.assertOpen()
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new LogdiskError('BAD_ARGUMENT', `bad read range ${offset}+${length}`)
    }
    length = Math.max(0, Math.min(length, this.sizeBytes - offset))
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    if (length === 0) return out
    const B = this.blockBytes
    const first = Math.floor(offset / B)
    const end = Math.ceil((offset + length) / B)
    let b = first
    while (b < end) {
      const pos = this.map.position(b)
      let run = 1
      if (pos < 0) {
        while (b + run < end && this.map.position(b + run) < 0) run++
        this.copyOut(null, b, run, offset, out)
      } else {
        const seg = Math.floor(pos / this.config.segmentBytes)
        while (b + run < end && this.map.position(b + run) === pos + run * B && Math.floor((pos + run * B) / this.config.segmentBytes) === seg) run++
        const data = await this.readRun(b, run, pos)
        this.copyOut(data, b, run, offset, out)
      }
      b += run
    }
    return out
  }

  /** Reads `run` blocks stored contiguously from `pos` and checks each block's CRC. */
  private async readRun (block: number, run: number, pos: number): Promise<Buffer> {
    const B = this.blockBytes
    const segmentId = Math.floor(pos / this.config.segmentBytes)
    const segment = await this.segment(segmentId)
    const data = Buffer.allocUnsafe(run * B)
    let got = 0
    while (got < data.length) {
      const n = await segment.handle.read(data, got, data.length - got, pos % this.config.segmentBytes + got)
      if (n === 0) throw new LogdiskError('CORRUPT', `segment ${segment.file} ends before block ${block + Math.floor(got / B)}'s data`)
      got += n
    }
    for (let i = 0; i < run; i++) {
      if (crc32c(data.subarray(i * B, (i + 1) * B)) !== this.map.crc(block + i)) {
        throw new LogdiskError('CORRUPT', `block ${block + i} fails its checksum in ${segment.file} at offset ${pos % this.config.segmentBytes + i * B}; run logdisk verify`)
      }
    }
    return data
  }

  /** Copies the part of blocks [block, block+run) that overlaps the request; null = zeros. */
  private copyOut (data: Buffer | null, block: number, run: number, offset: number, out: Buffer): void {
    const B = this.blockBytes
    const from = Math.max(offset, block * B)
    const to = Math.min(offset + out.length, (block + run) * B)
    if (data) data.copy(out, from - offset, from - block * B, to - block * B)
    else out.fill(0, from - offset, to - offset)
  }

  private async segment (id: number): Promise<Segment> {
    let segment = this.openSegments.get(id)
    if (segment) {
      this.openSegments.delete(id)
      this.openSegments.set(id, segment)
      return segment
    }
    if (!this.segmentIds.includes(id)) throw new LogdiskError('CORRUPT', `the index points at segment ${id}, which the store does not have`)
    const geometry = { uuid: this.config.uuid, blockBytes: this.blockBytes, segmentBytes: this.config.segmentBytes }
    segment = await Segment.open(this.layer, this.segmentDir, id, geometry)
    const raced = this.openSegments.get(id)
    if (raced) {
      await segment.close()
      return raced
    }
    this.openSegments.set(id, segment)
    for (const [oldId, old] of this.openSegments) {
      if (this.openSegments.size <= MAX_OPEN_SEGMENTS) break
      if (old === this.current) continue
      this.openSegments.delete(oldId)
      old.close().catch(() => undefined)
    }
    return segment
  }

  /**
   * Writes `data` at byte `offset`. Unaligned writes read the edge blocks and write whole
   * blocks (read-modify-write inside the store). Resolves once the bytes are in the log file
   * (durable after flush()).
   */
  write (offset: number, data: Buffer): Promise<void> {
    try {
      this.assertOpen()
      if (!Number.isSafeInteger(offset) || offset < 0) throw new LogdiskError('BAD_ARGUMENT', `bad write offset ${offset}`)
      if (offset + data.length > this.sizeBytes) {
        throw new LogdiskError('OUT_OF_RANGE', `write of ${data.length} bytes at ${offset} runs past the end of the ${this.sizeBytes}-byte volume`)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    if (data.length === 0) return Promise.resolve()
    return this.appendLock.run(() => this.writeLocked(offset, data))
  }

  private async writeLocked (offset: number, data: Buffer): Promise<void> {
    const B = this.blockBytes
    const first = Math.floor(offset / B)
    const end = Math.ceil((offset + data.length) / B)
    const head = offset - first * B
    const tail = end * B - (offset + data.length)
    let blocks = data
    if (head !== 0 || tail !== 0) {
      blocks = Buffer.alloc((end - first) * B)
      if (head !== 0) await this.read(first * B, B, blocks.subarray(0, B))
      if (tail !== 0 && (end - 1 !== first || head === 0)) await this.read((end - 1) * B, B, blocks.subarray((end - 1 - first) * B))
      data.copy(blocks, head)
    }
    for (let b = first; b < end;) {
      const n = await this.appendWrite(b, blocks.subarray((b - first) * B, (end - first) * B))
      b += n
    }
  }

  /** Appends one write entry holding as many of `data`'s blocks as fit; returns how many. */
  private async appendWrite (block: number, data: Buffer): Promise<number> {
    const B = this.blockBytes
    let count = Math.min(data.length / B, MAX_ENTRY_BLOCKS, this.blocksThatFit())
    if (count < 1) {
      await this.roll()
      count = Math.min(data.length / B, MAX_ENTRY_BLOCKS, this.blocksThatFit())
    }
    const crcs = new Uint32Array(count)
    for (let i = 0; i < count; i++) crcs[i] = crc32c(data.subarray(i * B, (i + 1) * B))
    const seq = this.seq + 1
    const header = encodeWriteHeader(seq, Date.now(), block, crcs, B)
    const payload = data.subarray(0, count * B)
    await this.appendEntry([header, payload])
    this.seq = seq
    const dataPosition = this.completedPosition - payload.length
    for (let i = 0; i < count; i++) {
      this.map.set(block + i, dataPosition + i * B, crcs[i])
      this.batch.addBlock(block + i, seq, dataPosition + i * B, crcs[i])
    }
    if (this.batch.history.length / 4 >= (this.opts.checkpointMaxBlocks ?? 65536)) {
      this.checkpoint().catch(err => this.log.error({ err: (err as Error).message }, 'index checkpoint failed; will retry'))
    }
    return count
  }

  private blocksThatFit (): number {
    const room = this.config.segmentBytes - this.current.tail - ENTRY_HEADER_BYTES
    return Math.max(0, Math.floor(room / (this.blockBytes + BLOCK_CRC_BYTES)))
  }

  /** Writes an entry at the tail of the current segment; the tail moves only on success. */
  private async appendEntry (parts: Buffer[]): Promise<void> {
    const segment = this.current
    const bytes = parts.reduce((n, p) => n + p.length, 0)
    if (segment.tail + bytes > this.config.segmentBytes) throw new LogdiskError('IO', 'internal: entry does not fit the segment')
    try {
      await segment.handle.writev(parts, segment.tail)
    } catch (err) {
      // Leave no partial entry behind the tail (a later scan would stop at it).
      await segment.handle.truncate(segment.tail).catch(() => undefined)
      throw fromSystemError(err, `append to ${segment.file}`)
    }
    segment.tail += bytes
    segment.unsynced = true
    this.completedPosition = this.positionOf(segment.id, segment.tail)
  }

  /** Seals the full current segment (synced, now `active`) and opens the next (004 cl. 6). */
  private async roll (): Promise<void> {
    const old = this.current
    await old.sync()
    const geometry = { uuid: this.config.uuid, blockBytes: this.blockBytes, segmentBytes: this.config.segmentBytes }
    const next = await Segment.create(this.layer, this.segmentDir, old.id + 1, geometry)
    this.current = next
    this.segmentIds.push(next.id)
    this.openSegments.set(next.id, next)
    this.batch.segments.set(old.id, { state: 'active' })
    this.batch.segments.set(next.id, { state: 'current' })
    this.completedPosition = this.positionOf(next.id, next.tail)
  }

  /** Appends a marker entry (sync point, snapshot cut); returns its sequence number. */
  appendMarker (kind: EntryKind, payload: object): Promise<number> {
    this.assertOpen()
    return this.appendLock.run(async () => {
      const body = pack(payload)
      if (this.current.tail + ENTRY_HEADER_BYTES + body.length > this.config.segmentBytes) await this.roll()
      const seq = this.seq + 1
      const timeMs = Date.now()
      await this.appendEntry([encodeMarker(kind, seq, timeMs, body)])
      this.seq = seq
      this.batch.markers.set(seq, { kind, position: this.completedPosition, timeMs, payload })
      return seq
    })
  }

  /** Makes every completed write durable (the image's fsync/flush). */
  flush (): Promise<void> {
    this.assertOpen()
    return this.appendLock.run(() => this.current.sync())
  }

  /**
   * Writes the block versions appended since the last checkpoint into LevelDB as one batch,
   * with the log position they cover. Only durable log bytes are indexed: the segment is
   * synced first, so after a crash the index never points past what survived.
   */
  checkpoint (): Promise<void> {
    if (this.checkpointing) return this.checkpointing
    if (this.batch.size === 0) return Promise.resolve()
    const batch = this.batch
    const cp: Checkpoint = { seq: this.seq, position: this.completedPosition, timeMs: Date.now() }
    this.batch = new IndexBatch()
    this.checkpointing = (async () => {
      try {
        await this.current.sync() // earlier segments were synced when they were sealed
        await this.index.commit(batch, cp)
        this.lastCheckpoint = cp
      } catch (err) {
        this.batch = mergeBatches(batch, this.batch)
        throw err
      } finally {
        this.checkpointing = undefined
      }
    })()
    return this.checkpointing
  }

  status (): StoreStatus {
    const segments = { current: 1, active: this.segmentIds.length - 1, inactive: 0, archived: 0, recycled: 0 }
    let logBytes = 0
    for (const id of this.segmentIds) logBytes += id === this.current.id ? this.current.tail : this.config.segmentBytes
    return {
      dir: this.dir,
      sizeBytes: this.sizeBytes,
      blockBytes: this.blockBytes,
      segmentBytes: this.config.segmentBytes,
      writtenBytes: this.map.count * this.blockBytes,
      logBytes,
      segments,
      index: {
        seq: this.seq,
        position: this.completedPosition,
        checkpointSeq: this.lastCheckpoint.seq,
        checkpointPosition: this.lastCheckpoint.position,
        pendingBlocks: this.batch.history.length / 4
      },
      mapMemoryBytes: this.map.memoryBytes,
      recovery: this.recovery
    }
  }

  /** Reads every entry of the log, checks every CRC and that the index agrees with the log. */
  async verify (): Promise<VerifyReport> {
    this.assertOpen()
    await this.flush()
    await this.checkpoint()
    const segmentIds = [...this.segmentIds]
    const geometry = { uuid: this.config.uuid, blockBytes: this.blockBytes, segmentBytes: this.config.segmentBytes }
    return verifyStore({
      layer: this.layer,
      segmentDir: this.segmentDir,
      geometry,
      segmentIds,
      upTo: this.lastCheckpoint,
      map: this.map,
      index: this.index
    })
  }

  /** Flushes, checkpoints and releases the store (and its lock). */
  async close (): Promise<void> {
    if (this.closed) return
    if (this.timer) clearInterval(this.timer)
    await this.appendLock.idle()
    await this.current.sync()
    await this.checkpoint()
    await this.checkpointing
    this.closed = true
    await this.release()
  }

  /**
   * For crash tests: drops everything not yet checkpointed, as a kill -9 would, and releases
   * the lock so the store can be opened again in the same process.
   */
  async abandon (): Promise<void> {
    if (this.closed) return
    if (this.timer) clearInterval(this.timer)
    this.closed = true
    await this.appendLock.idle().catch(() => undefined)
    await this.checkpointing?.catch(() => undefined)
    await this.release()
  }

  private async release (): Promise<void> {
    for (const segment of this.openSegments.values()) await segment.close().catch(() => undefined)
    this.openSegments.clear()
    await this.index.close()
    fs.rmSync(path.join(this.dir, HOLDER_FILE), { force: true })
  }
}

function mergeBatches (older: IndexBatch, newer: IndexBatch): IndexBatch {
  const out = new IndexBatch()
  for (const h of [older.history, newer.history]) for (const n of h) out.history.push(n)
  for (const [k, v] of older.segments) out.segments.set(k, v)
  for (const [k, v] of newer.segments) out.segments.set(k, v)
  for (const [k, v] of older.markers) out.markers.set(k, v)
  for (const [k, v] of newer.markers) out.markers.set(k, v)
  return out
}

function writeHolder (dir: string, holder = 'logdisk'): void {
  try {
    fs.writeFileSync(path.join(dir, HOLDER_FILE), JSON.stringify({ pid: process.pid, holder }) + '\n')
  } catch { /* informational only */ }
}

/** STORE_LOCKED, saying who holds the store when it can tell. */
function lockedError (dir: string, cause: LogdiskError): LogdiskError {
  let who = 'another process'
  try {
    const h = JSON.parse(fs.readFileSync(path.join(dir, HOLDER_FILE), 'utf8'))
    who = `pid ${h.pid} (${h.holder})`
  } catch { /* no holder file: keep the generic words */ }
  return new LogdiskError('STORE_LOCKED', `store ${dir} is in use by ${who}; unmount it first, or run the command while it is mounted`, cause)
}
