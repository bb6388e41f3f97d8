import fs from 'node:fs'
import path from 'node:path'
import { pack } from 'msgpackr'
import { LogdiskError, fromSystemError, isLogdiskError } from '../errors'
import { BlockMap } from './block-map'
import { CONFIG_FILE, newConfig, readConfig, writeConfig, type CreateOptions, type StoreConfig } from './config'
import { crc32c } from './crc'
import { encodeFree, encodeMarker, encodeMoveHeader, encodeTrim, encodeWriteHeader, entryBytes, tableBytes } from './entry'
import { nodeFileLayer, type FileHandle, type FileLayer } from './file-layer'
import { BLOCK_CRC_BYTES, ENTRY_HEADER_BYTES, EntryKind, MAX_ENTRY_BLOCKS, MAX_TRIM_BLOCKS, MOVE_RECORD_BYTES, SEGMENT_HEADER_BYTES, STORE_FORMAT_VERSION, TRIMMED, parseSegmentFileName, segmentFileName } from './format'
import { IndexBatch, IndexDb, type Checkpoint, type EntryRecord, type SegmentRecord, type SnapshotRecord } from './index-db'
import { analyzeVersions, anyLiveIn, firstLiveAtOrAfter, lowerBound, type CompactionReport } from './compaction'
import { BASELINE_BASE, baselineFiles, readBaselineIndex, writeBaselineIndex } from './baseline'
import { silentLogger, type Logger } from './logger'
import { Mutex } from './mutex'
import { HIGHEST_VOLUME_ID, HISTORY_HORIZON, recover, type RecoveryReport } from './recovery'
import { DEFAULT_VOLUME_ID_POLICY, SnapshotTable, type DeleteMarker, type SnapshotMarker, type VolumeIdPolicy } from './snapshots'
import { Segment, type SegmentGeometry } from './segment'
import { CACHE_VOLUME, LOCAL_VOLUME, POOL_FILE, localHome, type SegmentHome } from './segment-home'
import type { ArchiveLink } from './archive-link'
import { MirroredHandle } from './mirrored-handle'
import { verifyStore, type VerifyInput, type VerifyReport } from './verify'
import { readOnlyLayer } from './read-only-layer'
import { PassFence } from './pass-fence'
import { ReadEpochs } from './read-epochs'

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
  /** Where segment files live (the pool); default: one volume inside the store. */
  home?: SegmentHome
  /** Backing storage for archived segments (src/archive); none by default. */
  archive?: ArchiveLink
  /**
   * Fault injection by operation label, for tests of failure paths through real mounts
   * (litefs's pattern): 'marker' makes every marker append fail.
   */
  faults?: ReadonlySet<string>
  /** Milliseconds since the epoch; the simulation passes its virtual clock. */
  clock?: () => number
  /** Opens the LevelDB index at a location; the simulation passes its in-memory one. */
  openIndex?: (location: string) => Promise<IndexDb>
  /**
   * The history window (policy history.keep): compaction never frees a version that a point
   * younger than this still reads. Default DEFAULT_HISTORY_KEEP_MS; Infinity keeps everything.
   */
  historyKeepMs?: number
  /**
   * Read-only open (status, verify, restore... on a store the user may only read, or on a full
   * disk): nothing in the store or its pool volumes is written. The index is opened from
   * `indexDir` (a private view: src/store/index-view.ts), recovery replays into it without
   * cutting or moving anything, and only `scratchDir` is written (fetched archive copies).
   */
  readOnly?: { indexDir: string, scratchDir: string }
  /**
   * Replication (src/replicate): segments with an id at or above what this returns are not on
   * the replica yet, so background passes leave them exactly as they are (nothing freed,
   * punched, archived, moved away or deleted): the pass fence stops below it.
   */
  retainFrom?: () => number
  /**
   * Clones (src/clone): where blocks this store has no version of (never written, not
   * trimmed) are read from instead of zeros, for the current image and for snapshots alike:
   * the parent's snapshot the clone was made from. Resolves with `length` bytes.
   */
  fallThrough?: (offset: number, length: number) => Promise<Buffer>
}

/** history.keep by default: every point of the last day stays restorable (NILFS2's protection period). */
export const DEFAULT_HISTORY_KEEP_MS = 24 * 3600 * 1000

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
  /** Points at or before `horizonSeq` may have lost versions to compaction (snapshots never). */
  history: { horizonSeq: number, keepMs: number }
}

const INDEX_DIR = 'index'
const HOLDER_FILE = 'holder.json'
/** Segment handles kept open for reads; older ones are closed (bounded fd use). */
const MAX_OPEN_SEGMENTS = 64
const MAX_MARKER_BYTES = 1024 * 1024 // the scanner refuses larger markers
/** Archived segments kept fetched in <store>/cache at once. */
const MAX_CACHED_SEGMENTS = 8

/**
 * A virtual disk: an append-only log of equal-size segments (004 cl. 2-6) plus the index of
 * each block's newest copy. This is the library; it knows nothing of FUSE or the command line.
 *
 * Contract (after s3backer's s3backer.h): reads of never-written blocks return zeros; I/O past
 * the end throws OUT_OF_RANGE and changes nothing; a block whose CRC does not match is never
 * returned (CORRUPT); after flush() resolves, every write that resolved before it survives
 * kill -9 and power loss; an unsynced write may be lost but is never torn. A write larger
 * than one entry (256 blocks) or crossing a segment is several entries: if it fails midway
 * (ENOSPC), the blocks of its first entries are written and the rest keep their old data.
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
  /** Background passes run one at a time (src/store/pass-fence.ts says what they may touch). */
  private readonly maintenance = new Mutex()
  /** Reads in flight, so that a pass never punches or deletes bytes a read is about to use. */
  private readonly reads = new ReadEpochs()
  /** Sealed segments written since their last fdatasync, oldest first. */
  private readonly unsyncedSealed: Segment[] = []

  private constructor (
    readonly dir: string,
    readonly config: StoreConfig,
    private readonly layer: FileLayer,
    readonly home: SegmentHome,
    private readonly index: IndexDb,
    private readonly map: BlockMap,
    private current: Segment,
    private segmentIds: number[],
    /** The volumes each segment's copies should be on (F10: two when mirrored). */
    private readonly segmentVolumes: Map<number, string[]>,
    /** Lifecycle state of every segment still in the store (004: current, active, inactive...). */
    private readonly segmentState: Map<number, SegmentRecord['state']>,
    /** Segments with a complete copy on backing storage. */
    private readonly archivedIds: Set<number>,
    private seq: number,
    readonly recovery: RecoveryReport,
    private readonly snapshotTable: SnapshotTable,
    private readonly log: Logger,
    private readonly opts: OpenOptions,
    private lastTimeMs: number,
    private recycledCount: number,
    /** Points at or before this sequence may have lost versions (the log's history markers). */
    private horizon: number
  ) {
    this.openSegments.set(current.id, current)
    this.completedPosition = this.positionOf(current.id, current.tail)
    this.lastCheckpoint = { seq, position: this.completedPosition, timeMs: this.now() }
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
    await layer.mkdirp(localHome(dir).dirOf(LOCAL_VOLUME))
    writeConfig(dir, config) // last: a directory without store.json is not a store
    return config
  }

  static async open (dir: string, opts: OpenOptions = {}): Promise<Store> {
    const config = readConfig(dir)
    const layer = opts.readOnly ? readOnlyLayer(opts.fileLayer ?? nodeFileLayer, opts.readOnly.scratchDir) : opts.fileLayer ?? nodeFileLayer
    const log = opts.logger ?? silentLogger
    let index: IndexDb
    try {
      index = await (opts.openIndex ?? IndexDb.open)(opts.readOnly?.indexDir ?? path.join(dir, INDEX_DIR))
    } catch (err) {
      if (err instanceof LogdiskError && err.code === 'STORE_LOCKED') throw lockedError(dir, err)
      throw err
    }
    try {
      if (!opts.home && fs.existsSync(path.join(dir, POOL_FILE))) {
        throw new LogdiskError('BAD_ARGUMENT', `${dir} keeps its segments in a pool: open it through openStore (src/pool)`)
      }
      const baseHome = opts.home ?? localHome(dir)
      const map = new BlockMap()
      const geometry: SegmentGeometry = { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes }
      const cacheDir = opts.readOnly ? path.join(opts.readOnly.scratchDir, 'cache') : path.join(dir, 'cache')
      await removeFiles(layer, cacheDir) // fetched copies of a previous run
      // Rebuilding the index needs the whole history: every archived segment comes back for
      // the scan (its local copy may have been punched), and stays archived.
      const rebuilding = (await index.checkpoint()) === undefined
      const inArchive = rebuilding && opts.archive ? await fetchAllArchived(layer, cacheDir, opts.archive, log) : []
      const home = inArchive.length > 0 ? withCacheVolume(baseHome, cacheDir) : baseHome
      // Copies dropped while recovering are handled once the store exists.
      const drops: Array<[number, string]> = []
      let onDrop = (id: number, volume: string): void => { drops.push([id, volume]) }
      const recovered = await recover(layer, dir, home, geometry, index, map, log, id => volume => onDrop(id, volume), new Set(inArchive), { readOnly: !!opts.readOnly })
      if (inArchive.length > 0) await removeFiles(layer, cacheDir)
      const records = await index.segments()
      const ids = [...new Set([...records.keys(), ...recovered.segments])]
        .filter(id => id <= recovered.current.id && records.get(id)?.state !== 'recycled')
        .sort((a, b) => a - b)
      // Where each segment's copies should be: the index's record (written when it was placed
      // or moved), else where they were found.
      const volumes = new Map<number, string[]>()
      const states = new Map<number, SegmentRecord['state']>()
      const archived = new Set([...records].filter(([, r]) => r.archived === true).map(([id]) => id))
      for (const id of ids) {
        const state = records.get(id)?.state ?? 'active'
        states.set(id, id === recovered.current.id ? 'current' : state === 'current' ? 'active' : state)
        const where = records.get(id)?.volumes ?? recovered.chosen.get(id)
        if (where) volumes.set(id, where)
        baseHome.occupied(id, (recovered.located.get(id) ?? where ?? []).filter(v => v !== CACHE_VOLUME))
      }
      // Files of segments the index says are gone (a crash between the record and the delete).
      for (const [id, record] of records) {
        if (record.state !== 'recycled' && record.state !== 'archived') continue
        for (const v of (recovered.located.get(id) ?? []).filter(v => v !== CACHE_VOLUME)) {
          if (opts.readOnly) continue // the next open that writes removes it
          log.warn({ segment: id, volume: v, state: record.state }, 'removing a leftover copy of a segment the index says is gone')
          await layer.remove(path.join(baseHome.dirOf(v), segmentFileName(id)))
        }
      }
      const recycled = [...records.values()].filter(r => r.state === 'recycled').length
      if (!opts.readOnly) writeHolder(dir, opts.holder)
      const lastTimeMs = (await index.entry(recovered.seq))?.timeMs ?? 0
      const horizon = await index.counter(HISTORY_HORIZON)
      const store = new Store(dir, config, layer, baseHome, index, map, recovered.current, ids, volumes, states, archived, recovered.seq, recovered.report, recovered.snapshots, log, opts, lastTimeMs, recycled, horizon)
      onDrop = (id, volume) => store.copyDropped(id, volume)
      for (const [id, volume] of drops) store.copyDropped(id, volume)
      // A copy of the current segment that did not survive (a crash while a roll created the
      // copies one after the other): appends go on without it, recorded as degraded.
      for (const v of volumes.get(recovered.current.id) ?? []) {
        if (!recovered.current.volumes.includes(v)) store.copyDropped(recovered.current.id, v)
      }
      return store
    } catch (err) {
      await index.close()
      throw err
    }
  }

  get sizeBytes (): number { return this.config.sizeBytes }
  get historyKeepMs (): number { return this.opts.historyKeepMs ?? DEFAULT_HISTORY_KEEP_MS }

  /** Changes the history window (policy set history.keep on a mounted store). */
  setHistoryKeepMs (ms: number): void {
    if (!(ms >= 0)) throw new LogdiskError('BAD_ARGUMENT', `history window ${ms} ms must be 0 or more`)
    ;(this.opts as { historyKeepMs?: number }).historyKeepMs = ms
  }

  /**
   * The first point the history window protects: every sequence from it on stays restorable.
   * Found by bisection over entry times (times never decrease along the log).
   */
  private async windowStart (fence: PassFence): Promise<number> {
    // With backing storage every point stays restorable (versions are archived before they
    // are punched, and history keeps them): the window protects nothing more.
    if (this.opts.archive) return fence.seq + 1
    const keep = this.historyKeepMs
    if (keep <= 0) return fence.seq + 1
    if (!Number.isFinite(keep)) return 1
    const since = this.now() - keep
    let lo = 1
    let hi = fence.seq + 1
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2)
      let found: [number, EntryRecord] | undefined
      for await (const e of this.index.entries(mid, fence.seq)) { found = e; break }
      if (!found || found[1].timeMs >= since) hi = mid
      else lo = found[0] + 1
    }
    return lo
  }

  /**
   * Raises the history horizon: a history marker goes into the log (durable) before any
   * version it gives up is freed, so that an index rebuilt from the log knows it too.
   */
  private async raiseHorizon (horizon: number): Promise<void> {
    if (horizon <= this.horizon) return
    this.upgradeFormat()
    await this.appendLock.run(() => this.appendMarkerLocked(EntryKind.history, { horizon }))
    this.horizon = horizon
    this.batch.counters.set(HISTORY_HORIZON, horizon)
  }

  /** A format-1 store becomes format 2 before its first format-2 entry (see format.ts). */
  private upgradeFormat (): void {
    if (this.config.format >= STORE_FORMAT_VERSION) return
    writeConfig(this.dir, { ...this.config, format: STORE_FORMAT_VERSION })
    ;(this.config as { format: number }).format = STORE_FORMAT_VERSION
  }
  get blockBytes (): number { return this.config.blockBytes }
  private get geometry (): SegmentGeometry {
    return { uuid: this.config.uuid, blockBytes: this.blockBytes, segmentBytes: this.config.segmentBytes }
  }

  /** The store's clock (virtual in the simulation). */
  private now (): number {
    return this.opts.clock ? this.opts.clock() : Date.now()
  }

  private positionOf (segmentId: number, offset: number): number {
    return segmentId * this.config.segmentBytes + offset
  }

  /** Set by close(): background passes stop at their next step instead of finishing. */
  private closing = false

  /** Where a pass may stop early: everything before is as consistent as after a crash. */
  private assertNotClosing (): void {
    if (this.closing) throw new LogdiskError('CLOSED', `store ${this.dir} is closing; the background pass stopped early`)
  }

  private assertOpen (): void {
    if (this.closed) throw new LogdiskError('CLOSED', `store ${this.dir} is closed`)
  }

  /**
   * Reads `length` bytes at `offset` of the current volume into `into` (or a new buffer).
   * Reads stop at the end of the volume: the returned buffer is shorter then.
   */
  read (offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.readImage(offset, length, into, (first, n) => {
      const where = new Float64Array(n)
      const crcs = new Uint32Array(n)
      for (let i = 0; i < n; i++) {
        where[i] = this.map.position(first + i)
        if (where[i] >= 0) crcs[i] = this.map.crc(first + i)
      }
      return { where, crcs }
    })
  }

  /** Reads a snapshot image: each block as it was at the snapshot's cut (000 cl. 10-11). */
  async readSnapshot (name: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    this.assertOpen()
    const snap = this.snapshotTable.require(name)
    return this.readImage(offset, length, into, (first, n) => this.locateAt(snap.seq, first, n))
  }

  /**
   * Where blocks [first, first+n) were at cut `seq`. The newest copy is the answer whenever
   * its sequence number is at or before the cut; only blocks rewritten since ask the index,
   * one reverse seek each, whatever the number of snapshots. A new snapshot is listed as soon
   * as its marker is logged, so the first lookup after a cut checkpoints the index through it.
   */
  private async locateAt (seq: number, first: number, n: number): Promise<{ where: Float64Array, crcs: Uint32Array }> {
    const where = new Float64Array(n)
    const crcs = new Uint32Array(n)
    const lookups: Promise<void>[] = []
    if (this.lastCheckpoint.seq < seq) await this.checkpointThrough(seq) // first read after the cut
    for (let i = 0; i < n; i++) {
      const pos = this.map.position(first + i)
      if (pos !== -1 && this.map.seq(first + i) <= seq) {
        where[i] = pos // data, or TRIMMED: zeros
        crcs[i] = this.map.crc(first + i)
      } else if (pos === -1) {
        where[i] = -1 // never written at all, so not at the cut either
      } else {
        lookups.push(this.index.versionAt(first + i, seq).then(v => {
          where[i] = v ? v.position : -1
          crcs[i] = v ? v.crc : 0
        }))
      }
    }
    await Promise.all(lookups)
    return { where, crcs }
  }

  private readImage (
    offset: number, length: number, into: Buffer | undefined,
    locate: (first: number, n: number) => { where: Float64Array, crcs: Uint32Array } | Promise<{ where: Float64Array, crcs: Uint32Array }>
  ): Promise<Buffer> {
    return this.reads.guard(() => this.readImageNow(offset, length, into, locate))
  }

  private async readImageNow (
    offset: number, length: number, into: Buffer | undefined,
    locate: (first: number, n: number) => { where: Float64Array, crcs: Uint32Array } | Promise<{ where: Float64Array, crcs: Uint32Array }>
  ): Promise<Buffer> {
    this.assertOpen()
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new LogdiskError('BAD_ARGUMENT', `bad read range ${offset}+${length}`)
    }
    length = Math.max(0, Math.min(length, this.sizeBytes - offset))
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length)
    if (length === 0) return out
    const B = this.blockBytes
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
        this.copyOut(unwritten && this.opts.fallThrough ? await this.opts.fallThrough((first + i) * B, run * B) : null, first + i, run, offset, out)
      } else {
        const seg = Math.floor(where[i] / this.config.segmentBytes)
        while (i + run < n && where[i + run] === where[i] + run * B && Math.floor(where[i + run] / this.config.segmentBytes) === seg) run++
        const data = await this.readRun(first + i, run, where[i], crcs.subarray(i, i + run))
        this.copyOut(data, first + i, run, offset, out)
      }
      i += run
    }
    return out
  }

  /** Reads `run` blocks stored contiguously from `pos` and checks each block's CRC. */
  private async readRun (block: number, run: number, pos: number, crcs: Uint32Array): Promise<Buffer> {
    const B = this.blockBytes
    let handle: FileHandle
    let file: string
    let offset: number
    let local = false // read from a local copy (not the baseline, not a copy fetched back)
    if (pos >= BASELINE_BASE) {
      handle = await this.baselineHandle()
      file = baselineFiles(this.dir).image
      offset = pos - BASELINE_BASE
    } else {
      const segment = await this.segment(Math.floor(pos / this.config.segmentBytes))
      handle = segment.handle
      file = segment.file
      local = !segment.volumes.includes(CACHE_VOLUME)
      offset = pos % this.config.segmentBytes
    }
    const data = Buffer.allocUnsafe(run * B)
    let got = 0
    while (got < data.length) {
      const n = await handle.read(data, got, data.length - got, offset + got)
      if (n === 0) throw new LogdiskError('CORRUPT', `${file} ends before block ${block + Math.floor(got / B)}'s data`)
      got += n
    }
    const bad = firstBadBlock(data, crcs, B)
    if (bad >= 0) {
      // A mirrored segment: another copy may hold the good bytes (F10).
      if (handle instanceof MirroredHandle) {
        for (let c = 1; c < handle.copies.length; c++) {
          const again = Buffer.allocUnsafe(run * B)
          await handle.readCopy(c, again, 0, again.length, offset).catch(() => 0)
          if (firstBadBlock(again, crcs, B) < 0) {
            this.log.error({ file, block: block + bad }, 'a copy of a mirrored segment fails its checksum; served from another copy (run logdisk verify, then pool repair)')
            return again
          }
        }
      }
      // Compaction punches dead data out of archived segments: old versions come back
      // from backing storage (restores at old points, old snapshots). A local handle may
      // also be one taken just before archiving removed the segment's local copy.
      const id = Math.floor(pos / this.config.segmentBytes)
      if (local && this.archivedIds.has(id)) {
        const archived = await this.fetchArchived(id)
        const again = Buffer.allocUnsafe(run * B)
        await archived.handle.read(again, 0, again.length, offset)
        await archived.close()
        if (firstBadBlock(again, crcs, B) < 0) return again
      }
      throw new LogdiskError('CORRUPT', `block ${block + bad} fails its checksum in ${file} at offset ${offset + bad * B}; run logdisk verify`)
    }
    return data
  }

  private baselineFile: Promise<FileHandle> | undefined

  private async baselineForVerify (): Promise<VerifyInput['baseline']> {
    const idx = await readBaselineIndex(this.layer, this.dir, this.config.uuid)
    if (!idx) return undefined
    const handle = await this.baselineHandle()
    return {
      blocks: idx.blocks,
      base: BASELINE_BASE,
      read: async block => {
        const buf = Buffer.alloc(this.blockBytes)
        await handle.read(buf, 0, buf.length, block * this.blockBytes)
        return buf
      }
    }
  }

  private baselineHandle (): Promise<FileHandle> {
    this.baselineFile ??= (async () => {
      const { dir, image } = baselineFiles(this.dir)
      await this.layer.mkdirp(dir)
      return this.layer.open(image, true)
    })().catch(err => {
      this.baselineFile = undefined // the next use tries again
      throw err
    })
    return this.baselineFile
  }

  /**
   * Merges everything up to the oldest kept snapshot (or, with none, up to now) into the
   * block-ordered baseline, then compacts: the log entries it covered are freed (000 cl. 8).
   * Every image reads the same before and after. Returns how many blocks moved in.
   */
  async compactIntoBaseline (onProgress?: (done: number, total: number) => void): Promise<{ blocks: number, cutSeq: number, compaction: CompactionReport }> {
    this.assertOpen()
    return this.maintenance.run(async () => {
      const { blocks, cutSeq } = await this.mergeIntoBaseline(onProgress)
      const compaction = await this.compactLocked({ cleanBelow: 0 })
      return { blocks, cutSeq, compaction }
    })
  }

  private async mergeIntoBaseline (onProgress?: (done: number, total: number) => void): Promise<{ blocks: number, cutSeq: number }> {
    const fence = await this.takeFence()
    // Up to the oldest snapshot, and not into the history window: a slot overwritten here
    // held a version that no protected point may still read.
    const cutSeq = Math.min(this.snapshotTable.list()[0]?.seq ?? fence.seq, fence.seq, await this.windowStart(fence))
    const B = this.blockBytes
    const existing = await readBaselineIndex(this.layer, this.dir, this.config.uuid)
    const inBaseline = new Map<number, { seq: number, crc: number }>()
    for (const b of existing?.blocks ?? []) inBaseline.set(b.block, b)
    // The version of every block visible at the cut, from one pass over the index.
    const visible: Array<{ block: number, seq: number, crc: number, position: number }> = []
    let block = -1
    let best: { seq: number, crc: number, position: number } | undefined
    // A trimmed block stays a trim entry in the log: there is no data to merge.
    const flushBest = (): void => {
      if (best && best.position >= 0 && best.position < BASELINE_BASE) visible.push({ block, ...best })
    }
    for await (const [b, seq, position, crc] of this.index.history()) {
      if (b !== block) { flushBest(); block = b; best = undefined }
      if (seq <= cutSeq) best = { seq, crc, position }
    }
    flushBest()
    const publish = (cut: number): Promise<void> => writeBaselineIndex(this.layer, this.dir, this.config.uuid, {
      cutSeq: cut,
      blocks: [...inBaseline].sort((a, b) => a[0] - b[0]).map(([b, v]) => ({ block: b, seq: v.seq, crc: v.crc }))
    })

    // A slot about to be overwritten holds an older version that history may still read
    // (restores with backing storage keep every point): that version is read from its own
    // log copy (or the archive) from now on, or, where no copy is left, given up under a
    // raised horizon. Then the baseline index stops vouching for the slot, so that a crash
    // while it is rewritten never serves the half-written slot as the old version.
    const overwrite = visible.filter(v => inBaseline.has(v.block))
    if (overwrite.length > 0) {
      // Decided first, staged in the shared batch only once the horizon is in the log: a
      // failure in between must not leave history deletes for the next checkpoint to commit.
      let horizon = this.horizon
      const repoint: Array<[number, number, number, number]> = []
      const drop: Array<[number, number]> = []
      for (const v of overwrite) {
        const old = inBaseline.get(v.block)!
        const at = await this.index.versionAt(v.block, old.seq)
        if (at?.seq !== old.seq || at.position < BASELINE_BASE) continue // nothing reads the slot
        const original = await this.originalPosition(v.block, old.seq)
        if (original !== undefined) {
          repoint.push([v.block, old.seq, original, old.crc])
        } else {
          drop.push([v.block, old.seq])
          horizon = Math.max(horizon, v.seq - 1)
        }
      }
      await this.raiseHorizon(horizon)
      for (const [block, seq, position, crc] of repoint) this.batch.addBlock(block, seq, position, crc)
      for (const [block, seq] of drop) this.batch.historyDeletes.push(block, seq)
      await this.commitDurably()
      for (const v of overwrite) inBaseline.delete(v.block)
      await publish(existing?.cutSeq ?? 0)
    }

    const data: Buffer[] = []
    for (const v of visible) data.push(await this.readRun(v.block, 1, v.position, Uint32Array.of(v.crc)))
    await this.reads.drain() // a read that found an overwritten slot before the repointing ends first
    const handle = await this.baselineHandle()
    let done = 0
    for (const [i, v] of visible.entries()) {
      await handle.writev([data[i]], v.block * B)
      onProgress?.(++done, visible.length)
    }
    await handle.datasync()
    await this.layer.syncDir(baselineFiles(this.dir).dir)
    for (const v of visible) inBaseline.set(v.block, { seq: v.seq, crc: v.crc })
    await publish(cutSeq)
    // Only now does the index point at the baseline; the log copies become unreferenced.
    for (const v of visible) {
      this.map.set(v.block, BASELINE_BASE + v.block * B, v.crc, v.seq)
      this.batch.addBlock(v.block, v.seq, BASELINE_BASE + v.block * B, v.crc)
    }
    await this.commitDurably()
    return { blocks: visible.length, cutSeq }
  }

  /**
   * Where version `seq` of `block` was first written, if its bytes can still be read there:
   * the write entry's segment is on backing storage, or still local and not freed.
   */
  private async originalPosition (block: number, seq: number): Promise<number | undefined> {
    const e = await this.index.entry(seq)
    if (!e || e.kind !== EntryKind.write || block < e.block || block >= e.block + e.count) return undefined
    const position = e.position + tableBytes({ kind: EntryKind.write, count: e.count }) + (block - e.block) * this.blockBytes
    const id = Math.floor(position / this.config.segmentBytes)
    if (this.archivedIds.has(id)) return position
    if (!e.freed && this.segmentVolumes.has(id)) return position
    return undefined
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
    const volumes = this.segmentVolumes.get(id)
    if (this.segmentState.get(id) === 'archived') segment = await this.fetchArchived(id)
    else if (!volumes) throw new LogdiskError('CORRUPT', `the index points at segment ${id}, which the store does not have`)
    else segment = await Segment.open(this.layer, this.home, volumes, id, this.geometry, this.log, this.dropHandler(id))
    const raced = this.openSegments.get(id)
    if (raced) {
      await segment.close()
      return raced
    }
    this.openSegments.set(id, segment)
    for (const [oldId, old] of this.openSegments) {
      if (this.openSegments.size <= MAX_OPEN_SEGMENTS) break
      if (old === this.current || old.unsynced) continue // an unsynced segment is synced before it closes
      this.openSegments.delete(oldId)
      old.close().catch(() => undefined)
    }
    return segment
  }

  private readonly cacheOrder: number[] = []
  /** Fetches from backing storage in flight, by segment id. */
  private readonly fetching = new Map<number, Promise<void>>()

  /**
   * Brings an archived segment back from backing storage into <store>/cache (bounded: the
   * oldest fetched copies are deleted past MAX_CACHED_SEGMENTS) and opens it. Restores and
   * reads of old snapshots work with archived segments this way (004 cl. 16-18).
   */
  private async fetchArchived (id: number): Promise<Segment> {
    const link = this.opts.archive
    if (!link) throw new LogdiskError('NOT_FOUND', `segment ${id} is archived, and no archive target is configured (logdisk policy set ${this.dir} archive.target=...)`)
    const cache = this.cacheHome()
    const dir = cache.dirOf(CACHE_VOLUME)
    const file = path.join(dir, segmentFileName(id))
    // Concurrent reads of one archived segment share one fetch: two fetches into the same
    // `.fetch` file would truncate and rename it under each other (ENOENT, torn copies).
    let fetching = this.cacheOrder.includes(id) ? undefined : this.fetching.get(id)
    if (!this.cacheOrder.includes(id) && !fetching) {
      fetching = (async () => {
        const data = await link.get(id)
        await this.layer.mkdirp(dir)
        const tmp = `${file}.fetch`
        const h = await this.layer.open(tmp, true)
        try {
          await h.truncate(0)
          await h.writev([data], 0)
        } finally {
          await h.close()
        }
        await this.layer.rename(tmp, file)
        this.cacheOrder.push(id)
        while (this.cacheOrder.length > MAX_CACHED_SEGMENTS) {
          const old = this.cacheOrder.shift()!
          this.forgetHandle(old)
          await this.layer.remove(path.join(dir, segmentFileName(old))).catch(() => undefined)
        }
      })().finally(() => this.fetching.delete(id))
      this.fetching.set(id, fetching)
    }
    await fetching
    return Segment.open(this.layer, cache, [CACHE_VOLUME], id, this.geometry, this.log)
  }

  private cacheHome (): SegmentHome {
    const dir = this.opts.readOnly ? path.join(this.opts.readOnly.scratchDir, 'cache') : path.join(this.dir, 'cache')
    return { dirOf: () => dir, volumes: () => [CACHE_VOLUME], place: async () => [CACHE_VOLUME], occupied () {}, vacated () {} }
  }

  /**
   * Archives sealed segments to backing storage (004 cl. 14-18): inactive ones (nothing live),
   * active ones sealed longer than `olderThanMs`, and the oldest active ones past a working
   * set of `workingSet` local segments. Each is put (atomic, verified) before its local copy
   * goes; fetched back on demand. Appends go on meanwhile.
   */
  async archive (opts: { olderThanMs?: number, workingSet?: number } = {}, onProgress?: (done: number, total: number) => void): Promise<{ archived: number, removedLocal: number, bytes: number }> {
    this.assertOpen()
    if (!this.opts.archive) throw new LogdiskError('BAD_ARGUMENT', `no archive target: set one with logdisk policy set ${this.dir} archive.target=/dir|s3://bucket/prefix`)
    return this.maintenance.run(() => this.archiveLocked(opts, onProgress))
  }

  private async archiveLocked (opts: { olderThanMs?: number, workingSet?: number }, onProgress?: (done: number, total: number) => void): Promise<{ archived: number, removedLocal: number, bytes: number }> {
    const fence = await this.takeFence() // what is archived is sealed and durable
    await this.appendLock.run(() => this.syncAll())
    this.markInactive(fence)
    const sealed = this.segmentIds.filter(id => fence.mayTouchSegment(id) && this.segmentState.get(id) !== 'archived')
    const local = sealed.filter(id => this.segmentState.get(id) === 'active')
    const chosen = new Set(sealed.filter(id => this.segmentState.get(id) === 'inactive'))
    if (opts.olderThanMs && opts.olderThanMs > 0) {
      for (const id of local) {
        const st = await this.sealedAtMs(id)
        if (st !== undefined && this.now() - st >= opts.olderThanMs) chosen.add(id)
      }
    }
    if (opts.workingSet && opts.workingSet > 0) {
      const excess = local.length + 1 - opts.workingSet
      for (const id of local.slice(0, Math.max(0, excess))) chosen.add(id)
    }
    const out = { archived: 0, removedLocal: 0, bytes: 0 }
    let done = 0
    for (const id of [...chosen].sort((a, b) => a - b)) {
      this.assertNotClosing()
      onProgress?.(done++, chosen.size)
      out.bytes += await this.ensureArchived(id)
      out.archived++
      // The local copy goes only once the index says where the segment is now.
      const volumes = this.segmentVolumes.get(id) ?? []
      this.segmentState.set(id, 'archived')
      this.segmentVolumes.delete(id)
      this.recordSegment(id)
      await this.commitDurably()
      this.forgetHandle(id)
      await this.removeEveryCopy(id)
      this.home.vacated(id, volumes)
      out.removedLocal++
    }
    onProgress?.(chosen.size, chosen.size)
    this.log.info(out, 'archived')
    return out
  }

  /** Whether block `block` has a version in this store (written or trimmed): a clone's promote copies the others. */
  hasVersion (block: number): boolean {
    this.assertOpen()
    return this.map.position(block) !== -1
  }

  /**
   * The segments of the log, oldest first, with their states (recycled ones are gone): what
   * replication ships.
   */
  logSegments (): Array<{ id: number, state: SegmentRecord['state'] }> {
    this.assertOpen()
    return this.segmentIds.map(id => ({ id, state: this.segmentState.get(id) ?? 'active' }))
  }

  /**
   * Raw bytes of segment `id` from byte `offset`: at most `length`, fewer at the end of the
   * file (an archived segment is fetched back first). For replication, which ships the log as
   * it is: callers read only sealed segments and durable bytes of the current one, and the
   * read runs in a read epoch, so a pass never deletes the file under it.
   */
  readLog (id: number, offset: number, length: number): Promise<Buffer> {
    this.assertOpen()
    return this.reads.guard(async () => {
      const segment = await this.segment(id)
      const size = await segment.handle.size()
      const n = Math.max(0, Math.min(length, size - offset))
      const out = Buffer.allocUnsafe(n)
      let got = 0
      while (got < n) {
        const r = await segment.handle.read(out, got, n - got, offset + got)
        if (r === 0) break
        got += r
      }
      return out.subarray(0, got)
    })
  }

  /** Sets (or removes) the backing storage while open: `policy set archive.target` on a mount. */
  attachArchive (link: ArchiveLink | undefined): void {
    (this.opts as { archive?: ArchiveLink }).archive = link
  }

  /**
   * Seed 004's life cycle (cl. 14-15, 19): a sealed segment none of whose entries holds a
   * block's newest version is inactive, whatever snapshots or restore points still read from
   * it; with backing storage it is archived and its local copy goes (reads fetch it back).
   * Writes and compaction's moves only ever land in the current segment, so a sealed segment
   * that is inactive stays so. Returns how many became inactive.
   */
  private markInactive (fence: PassFence): number {
    const S = this.config.segmentBytes
    const holdsNewest = new Set<number>()
    this.map.forEach((_block, position) => { if (position < BASELINE_BASE) holdsNewest.add(Math.floor(position / S)) })
    let n = 0
    for (const id of this.segmentIds) {
      if (!fence.mayTouchSegment(id) || this.segmentState.get(id) !== 'active' || holdsNewest.has(id)) continue
      this.segmentState.set(id, 'inactive')
      this.recordSegment(id)
      n++
    }
    return n
  }

  /** Puts segment `id` on backing storage unless it is there; returns the bytes put. */
  private async ensureArchived (id: number): Promise<number> {
    if (this.archivedIds.has(id)) return 0
    const segment = await this.segment(id)
    const size = await segment.handle.size()
    const data = Buffer.allocUnsafe(size)
    let got = 0
    while (got < size) {
      const n = await segment.handle.read(data, got, size - got, got)
      if (n === 0) break
      got += n
    }
    await this.opts.archive!.put(id, data.subarray(0, got))
    this.archivedIds.add(id)
    this.recordSegment(id)
    // Durable before anything relies on it (a free header, a punch, a local delete): lost in
    // a power loss, the next archive would put the punched local copy over the whole one.
    await this.index.putSegments(new Map([[id, this.batch.segments.get(id)!]]))
    return got
  }

  /** When a segment was sealed: the time of its last entry. */
  private async sealedAtMs (id: number): Promise<number | undefined> {
    let last: number | undefined
    for await (const [, e] of this.index.entries(1, this.seq)) {
      const seg = Math.floor(e.position / this.config.segmentBytes)
      if (seg === id) last = e.timeMs
      else if (seg > id) break
    }
    return last
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
    const timeMs = this.nextTimeMs()
    const header = encodeWriteHeader(seq, timeMs, block, crcs, B)
    const payload = data.subarray(0, count * B)
    await this.appendEntry([header, payload], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      const dataPosition = this.completedPosition - payload.length
      this.batch.entries.set(seq, { kind: EntryKind.write, timeMs, position: dataPosition - header.length, block, count })
      for (let i = 0; i < count; i++) {
        this.map.set(block + i, dataPosition + i * B, crcs[i], seq)
        this.batch.addBlock(block + i, seq, dataPosition + i * B, crcs[i])
      }
    })
    if (this.batch.history.length / 4 >= (this.opts.checkpointMaxBlocks ?? 65536)) {
      this.checkpoint().catch(err => this.log.error({ err: (err as Error).message }, 'index checkpoint failed; will retry'))
    }
    return count
  }

  /**
   * Discards (TRIM, F11) `length` bytes at `offset` of the current volume, the FALLOCATE
   * PUNCH_HOLE and ZERO_RANGE of the image: they read as zeros from now on, while snapshots and
   * points before keep their data, and compaction frees what only the discarded versions held.
   * Whole blocks become trim entries (only blocks that hold data: the others read as zeros
   * already, and a trim of every block of a fresh disk, as mkfs does, costs nothing); the
   * partial blocks at the edges are written as zeros. Resolves once it is in the log (durable
   * after flush()), like a write.
   */
  discard (offset: number, length: number): Promise<void> {
    try {
      this.assertOpen()
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new LogdiskError('BAD_ARGUMENT', `bad discard range ${offset}+${length}`)
      if (offset + length > this.sizeBytes) {
        throw new LogdiskError('OUT_OF_RANGE', `discard of ${length} bytes at ${offset} runs past the end of the ${this.sizeBytes}-byte volume`)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    if (length === 0) return Promise.resolve()
    return this.appendLock.run(() => this.discardLocked(offset, length))
  }

  private async discardLocked (offset: number, length: number): Promise<void> {
    const B = this.blockBytes
    const first = Math.ceil(offset / B)
    const end = Math.floor((offset + length) / B)
    if (first >= end) return this.writeLocked(offset, Buffer.alloc(length)) // inside one block
    // In block order, as a write of zeros would go into the log (a crash keeps a prefix).
    if (first * B > offset) await this.writeLocked(offset, Buffer.alloc(first * B - offset))
    // The blocks of [first, end) that hold data, found from whichever is smaller: the range or the map.
    const held: number[] = []
    if (end - first <= this.map.count) {
      for (let b = first; b < end; b++) if (this.map.position(b) >= 0) held.push(b)
    } else {
      this.map.forEach((b, position) => { if (b >= first && b < end && position >= 0) held.push(b) })
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
    if (this.current.tail + ENTRY_HEADER_BYTES > this.config.segmentBytes) await this.roll()
    this.upgradeFormat()
    const seq = this.seq + 1
    const timeMs = this.nextTimeMs()
    const position = this.completedPosition
    await this.appendEntry([encodeTrim(seq, timeMs, block, count)], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      this.batch.entries.set(seq, { kind: EntryKind.trim, timeMs, position, block, count })
      for (let i = 0; i < count; i++) {
        this.map.set(block + i, TRIMMED, 0, seq)
        this.batch.addBlock(block + i, seq, TRIMMED, 0)
      }
    })
    if (this.batch.history.length / 4 >= (this.opts.checkpointMaxBlocks ?? 65536)) {
      this.checkpoint().catch(err => this.log.error({ err: (err as Error).message }, 'index checkpoint failed; will retry'))
    }
  }

  private blocksThatFit (): number {
    const room = this.config.segmentBytes - this.current.tail - ENTRY_HEADER_BYTES
    return Math.max(0, Math.floor(room / (this.blockBytes + BLOCK_CRC_BYTES)))
  }

  /**
   * Writes an entry at the tail of the current segment; the tail moves only on success.
   * `applied` runs in the same synchronous step as the tail move, so a checkpoint can never
   * see a log position that covers an entry the index batch does not hold yet.
   */
  private async appendEntry (parts: Buffer[], applied: () => void): Promise<void> {
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
    applied()
  }

  /** Seals the full current segment (synced, now `active`) and opens the next (004 cl. 6). */
  private async roll (): Promise<void> {
    const old = this.current
    // Not synced here: a 64 MiB fdatasync per roll would halve sequential writes. The next
    // flush or checkpoint syncs every sealed segment, oldest first, before the current one,
    // so a flush still covers everything before it; after a crash a torn older segment cuts
    // the log there and later segments (unflushed too) are kept aside.
    if (old.unsynced) this.unsyncedSealed.push(old)
    const volumes = await this.home.place(old.id + 1) // NO_SPACE when the pool is full
    let next: Segment
    try {
      next = await Segment.create(this.layer, this.home, volumes, old.id + 1, this.geometry, this.log, this.dropHandler(old.id + 1))
    } catch (err) {
      this.home.vacated(old.id + 1, volumes)
      throw err
    }
    this.home.occupied(next.id, volumes)
    this.current = next
    this.segmentIds.push(next.id)
    this.segmentVolumes.set(next.id, volumes)
    this.openSegments.set(next.id, next)
    this.segmentState.set(old.id, 'active')
    this.segmentState.set(next.id, 'current')
    this.recordSegment(old.id)
    this.recordSegment(next.id)
    this.completedPosition = this.positionOf(next.id, next.tail)
  }

  /** Entry times never decrease along the log, so a time maps to a sequence number. */
  private nextTimeMs (): number {
    return Math.max(this.now(), this.lastTimeMs)
  }

  /** Appends a marker entry (sync point, snapshot cut); call under the append lock. */
  private async appendMarkerLocked (kind: EntryKind, payload: Record<string, unknown>): Promise<EntryRecord & { seq: number }> {
    if (this.opts.faults?.has('marker')) throw new LogdiskError('IO', 'injected fault: the marker write failed (LOGDISK_FAULTS=marker)')
    const body = pack(payload)
    if (body.length > MAX_MARKER_BYTES) throw new LogdiskError('BAD_ARGUMENT', `a marker of ${body.length} bytes is over the ${MAX_MARKER_BYTES}-byte limit (a shorter note, please)`)
    if (this.current.tail + ENTRY_HEADER_BYTES + body.length > this.config.segmentBytes) await this.roll()
    const seq = this.seq + 1
    const timeMs = this.nextTimeMs()
    const position = this.completedPosition
    const entry: EntryRecord = { kind, timeMs, position, block: 0, count: 0, payload }
    await this.appendEntry([encodeMarker(kind, seq, timeMs, body)], () => {
      this.seq = seq
      this.lastTimeMs = timeMs
      this.batch.entries.set(seq, entry)
      if (kind === EntryKind.snapshot || kind === EntryKind.deleteSnapshot) {
        for (const [cut, record] of this.snapshotTable.apply(kind, seq, position, timeMs, payload)) this.batch.snapshots.set(cut, record)
        this.batch.counters.set(HIGHEST_VOLUME_ID, this.snapshotTable.highestId)
      }
    })
    await this.syncAll() // a marker is reported only once it is durable
    return { ...entry, seq }
  }

  /** Checkpoints until the index covers `seq` (a snapshot's reads and restores need it). */
  private async checkpointThrough (seq: number): Promise<void> {
    while (this.lastCheckpoint.seq < seq) {
      await this.checkpointing
      if (this.lastCheckpoint.seq < seq) await this.checkpoint()
    }
  }

  /**
   * Writes a sync marker (004 cl. 5): a consistency point with a time and a note. `frozen`
   * records that the filesystem on the image was frozen around it (application-consistent).
   * Returns the point's id, which is its sequence number.
   */
  async syncPoint (note = '', frozen = false): Promise<{ seq: number, timeMs: number }> {
    this.assertOpen()
    const e = await this.appendLock.run(() => this.appendMarkerLocked(EntryKind.sync, { note, frozen }))
    return { seq: e.seq, timeMs: e.timeMs }
  }

  /**
   * Cuts the log: O(1) whatever was written or how many snapshots exist (000 cl. 1-2). The
   * cut is one marker entry; the image of the snapshot is every block's newest version at or
   * before it.
   */
  async snapshot (opts: { name?: string, id?: number, frozen?: boolean, idPolicy?: VolumeIdPolicy } = {}): Promise<SnapshotRecord> {
    this.assertOpen()
    const e = await this.appendLock.run(async () => {
      const name = opts.name ?? `snap-${this.seq + 1}`
      this.snapshotTable.checkNewName(name)
      const { id, displaced } = this.snapshotTable.assignId(opts.idPolicy ?? DEFAULT_VOLUME_ID_POLICY, opts.id)
      const marker: SnapshotMarker = { name, id, frozen: opts.frozen ?? false, ...(displaced ? { displaced: displaced.seq } : {}) }
      return this.appendMarkerLocked(EntryKind.snapshot, marker as unknown as Record<string, unknown>)
    })
    // No checkpoint here: the marker is durable, the index catches up in the background (or
    // at the first read of the snapshot), so the cut costs one append and one fdatasync.
    return this.snapshotTable.require((e.payload as unknown as SnapshotMarker).name)
  }

  /** Deletes a snapshot: its image goes, its id returns to the pool (001 delete volume). */
  async deleteSnapshot (name: string): Promise<SnapshotRecord> {
    this.assertOpen()
    return this.appendLock.run(async () => {
      const snap = this.snapshotTable.require(name)
      const marker: DeleteMarker = { name, seq: snap.seq }
      await this.appendMarkerLocked(EntryKind.deleteSnapshot, marker as unknown as Record<string, unknown>)
      return snap
    })
  }

  snapshots (): SnapshotRecord[] {
    return this.snapshotTable.list()
  }

  /**
   * Bytes each snapshot alone pins (keyed by cut seq): versions that the current volume no
   * longer uses and that no other snapshot sees. Deleting the snapshot makes them
   * reclaimable by compaction. One pass over the index of versions.
   */
  async snapshotPinnedBytes (): Promise<Map<number, number>> {
    this.assertOpen()
    await this.checkpointThrough(this.seq)
    const cuts = this.snapshotTable.list().map(s => s.seq)
    const pinned = new Map<number, number>(cuts.map(c => [c, 0]))
    const firstCutAtOrAfter = (seq: number): number => lowerBound(cuts, seq)
    let block = -1
    let prevSeq = 0
    for await (const [b, seq] of this.index.history()) {
      // A version lives from its seq until the block's next version; the cuts in that span see it.
      if (b === block) {
        const from = firstCutAtOrAfter(prevSeq)
        if (firstCutAtOrAfter(seq) - from === 1) pinned.set(cuts[from], pinned.get(cuts[from])! + this.blockBytes)
      }
      block = b
      prevSeq = seq
    }
    return pinned
  }

  /**
   * Blocks written in (fromSeq, toSeq], in block order: what changed between two cuts (an
   * incremental send, a diff). One pass over the index of versions.
   */
  async * changedBlocks (fromSeq: number, toSeq: number): AsyncGenerator<number> {
    this.assertOpen()
    await this.checkpointThrough(toSeq)
    let last = -1
    for await (const [block, seq] of this.index.history()) {
      if (block !== last && seq > fromSeq && seq <= toSeq) {
        last = block
        yield block
      }
    }
  }

  /** Reads one block as it was at cut `seq` (zeros if it was never written by then). */
  async readBlockAt (seq: number, block: number): Promise<Buffer> {
    this.assertOpen()
    await this.checkpointThrough(seq)
    return this.reads.guard(async () => {
      const at = await this.index.versionAt(block, seq)
      if (!at || at.position < 0) return Buffer.alloc(this.blockBytes) // never written, or trimmed
      return this.readRun(block, 1, at.position, Uint32Array.of(at.crc))
    })
  }

  /** The volumes a segment's copies should be on. */
  volumesOf (id: number): string[] | undefined {
    return this.segmentVolumes.get(id)
  }

  /** Segment ids with the volumes their copies should be on (pool list, repair). */
  segmentPlacement (): Map<number, string[]> {
    return new Map(this.segmentVolumes)
  }

  /**
   * Copies sealed segment `id` from volume `from` to volume `to`: written under a temporary
   * name, fsynced, renamed, directory fsynced. The copy is complete before anything points
   * at it.
   */
  private async copySegmentFile (id: number, from: string, to: string): Promise<void> {
    const name = segmentFileName(id)
    const src = await this.layer.open(path.join(this.home.dirOf(from), name), false)
    const dstDir = this.home.dirOf(to)
    await this.layer.mkdirp(dstDir)
    const tmp = path.join(dstDir, `${name}.copy`)
    const dst = await this.layer.open(tmp, true)
    try {
      await dst.truncate(0)
      const size = await src.size()
      const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
      for (let at = 0; at < size;) {
        const n = await src.read(buf, 0, Math.min(buf.length, size - at), at)
        if (n === 0) throw new LogdiskError('IO', `segment ${name} on ${from} ended early while copying`)
        await dst.writev([buf.subarray(0, n)], at)
        at += n
      }
      await dst.datasync()
    } finally {
      await src.close()
      await dst.close()
    }
    await this.layer.rename(tmp, path.join(dstDir, name))
    await this.layer.syncDir(dstDir)
  }

  /** Makes the index say where a segment's copies are, durably, before old copies go. */
  private async recordVolumes (id: number, volumes: string[]): Promise<void> {
    this.segmentVolumes.set(id, volumes)
    this.forgetHandle(id) // the next use opens the copies named now, even if the commit fails
    this.recordSegment(id)
    await this.commitDurably()
  }

  /**
   * Puts segment `id`'s record, built from the in-memory state alone, into the next index
   * batch: every change of a segment's state, copies or archived flag goes through here, so
   * no writer can forget a field (a segment's archived flag was once lost this way).
   */
  private recordSegment (id: number): void {
    const state = this.segmentState.get(id) ?? 'recycled'
    const archived = this.archivedIds.has(id) || undefined
    this.batch.segments.set(id, { state, volumes: [...(this.segmentVolumes.get(id) ?? [])], archived })
  }

  /** Segment records that must reach the index, synced, before the next flush returns. */
  private readonly mustRecord = new Set<number>()

  /** What a mirrored segment's handle calls when it drops a copy. */
  private dropHandler (id: number): (volume: string) => void {
    return volume => this.copyDropped(id, volume)
  }

  /**
   * A copy of a mirrored segment failed a write and was dropped: it no longer holds what the
   * others hold. The record says so before the next flush or checkpoint returns, so a restart
   * never reads the stale copy (it would go back in time) and repair replaces it.
   */
  copyDropped (id: number, volume: string): void {
    const volumes = this.segmentVolumes.get(id)
    if (!volumes?.includes(volume)) return
    this.segmentVolumes.set(id, volumes.filter(v => v !== volume))
    this.recordSegment(id)
    this.mustRecord.add(id)
    this.log.error({ segment: id, volume }, 'a copy of a mirrored segment fell behind and was dropped; the store runs degraded until logdisk pool repair')
  }

  /** Makes the records of dropped copies durable (part of every flush and checkpoint). */
  private async recordDrops (): Promise<void> {
    if (this.mustRecord.size === 0) return
    const records = new Map<number, SegmentRecord>()
    for (const id of this.mustRecord) {
      records.set(id, { state: this.segmentState.get(id) ?? 'active', volumes: [...(this.segmentVolumes.get(id) ?? [])], archived: this.archivedIds.has(id) || undefined })
    }
    this.mustRecord.clear()
    try {
      await this.index.putSegments(records)
    } catch (err) {
      for (const id of records.keys()) this.mustRecord.add(id)
      throw err
    }
  }

  /** Drops the cached handle of a segment (kept open a little for reads in flight). */
  private forgetHandle (id: number): void {
    const old = this.openSegments.get(id)
    if (!old) return
    this.openSegments.delete(id)
    // Reads that found it may still be using it: close once they are done (and synced:
    // a sealed segment waiting for its fdatasync is synced by the next flush through it).
    this.reads.drain().then(() => old.unsynced ? old.sync() : undefined).then(() => old.close()).catch(() => undefined)
  }

  /**
   * Takes the fence of a background pass (see pass-fence.ts): under the append lock, then
   * the index is checkpointed through it so that it holds every entry the pass may judge.
   */
  private async takeFence (): Promise<PassFence> {
    const fence = await this.appendLock.run(async () => new PassFence(this.seq, Math.min(this.current.id, this.opts.retainFrom?.() ?? Infinity), this.config.segmentBytes))
    await this.checkpointThrough(fence.seq)
    return fence
  }

  /**
   * Deletes every local copy of a segment the index now says is archived or recycled: the
   * recorded ones and any stale one (a mirror copy that fell behind), which a later rebuild
   * would otherwise take for part of the log.
   */
  private async removeEveryCopy (id: number): Promise<void> {
    await this.reads.drain()
    for (const volume of this.home.volumes()) {
      let dir: string
      try {
        dir = this.home.dirOf(volume)
      } catch { continue }
      await this.layer.remove(path.join(dir, segmentFileName(id)))
    }
  }

  /** Removes a file once no read in flight can be using its bytes. */
  private async removeAfterReads (file: string): Promise<void> {
    await this.reads.drain()
    await this.layer.remove(file)
  }

  /**
   * Moves sealed segment `id` from pool volume `from` to `to` (a pool drain, seed 002):
   * copy, fsync, switch the index, then delete the old copy. A crash at any step leaves a
   * complete copy that the index or the volume listing finds.
   */
  relocateSegment (id: number, from: string, to: string): Promise<void> {
    this.assertOpen()
    return this.maintenance.run(() => this.relocateLocked(id, from, to))
  }

  private async relocateLocked (id: number, from: string, to: string): Promise<void> {
    await this.seal(id)
    const volumes = this.segmentVolumes.get(id)
    if (volumes && !volumes.includes(from) && await this.hasCopy(id, volumes)) {
      // A copy the index no longer names: a move that crashed after switching the index.
      await this.layer.remove(path.join(this.home.dirOf(from), segmentFileName(id)))
      await this.layer.syncDir(this.home.dirOf(from))
      this.home.vacated(id, [from])
      return
    }
    if (!volumes?.includes(from)) throw new LogdiskError('NOT_FOUND', `segment ${id} has no copy on volume ${from}`)
    await this.copySegmentFile(id, from, to)
    this.home.occupied(id, [to])
    await this.recordVolumes(id, volumes.map(v => v === from ? to : v))
    this.forgetHandle(id)
    await this.removeAfterReads(path.join(this.home.dirOf(from), segmentFileName(id)))
    // Not ignored: a volume released while its deletes may not be durable could come back
    // holding copies (the drain fails instead; the next one removes the stale copy).
    await this.layer.syncDir(this.home.dirOf(from))
    this.home.vacated(id, [from])
  }

  /**
   * Makes segment `id` sealed and durable before a pass copies it: the current segment rolls
   * (checked under the append lock: a write may have rolled meanwhile), then everything is
   * synced, so no segment a pass copies or forgets still waits for its fdatasync.
   */
  private async seal (id: number): Promise<void> {
    await this.appendLock.run(async () => {
      if (id === this.current.id) await this.roll()
      await this.syncAll()
    })
  }

  /** Whether a copy of segment `id` is on one of `volumes`. */
  private async hasCopy (id: number, volumes: string[]): Promise<boolean> {
    for (const v of volumes) {
      try {
        await (await this.layer.open(path.join(this.home.dirOf(v), segmentFileName(id)), false)).close()
        return true
      } catch { /* not there */ }
    }
    return false
  }

  /**
   * Restores lost copies (F10): for every segment whose copies are fewer than `copies` or
   * missing from a volume the index names, copies a surviving one onto `place`'s choice.
   * Returns how many copies were made.
   */
  repairCopies (copies: number, place: (id: number, exclude: string[]) => Promise<string>): Promise<number> {
    this.assertOpen()
    return this.maintenance.run(() => this.repairLocked(copies, place))
  }

  private async repairLocked (copies: number, place: (id: number, exclude: string[]) => Promise<string>): Promise<number> {
    await this.appendLock.run(() => this.syncAll()) // no sealed segment left unsynced to move
    let made = 0
    for (const id of [...this.segmentIds]) {
      this.assertNotClosing()
      const want = this.segmentVolumes.get(id) ?? []
      const present: string[] = []
      for (const v of want) {
        try {
          // A copy counts when its header checks out (a power loss in a roll can leave an empty one).
          await (await Segment.open(this.layer, this.home, [v], id, this.geometry)).close()
          present.push(v)
        } catch { /* lost */ }
      }
      if (present.length === 0) continue // nothing to copy from; verify reports it
      if (present.length >= Math.max(copies, want.length) && present.length === want.length) continue
      await this.seal(id)
      const next = [...present]
      while (next.length < Math.max(copies, 1)) {
        const to = await place(id, next) // reserves the copy's place
        try {
          await this.copySegmentFile(id, present[0], to)
        } catch (err) {
          this.home.vacated(id, [to])
          throw err
        }
        next.push(to)
        made++
      }
      this.home.vacated(id, want.filter(v => !next.includes(v)))
      await this.recordVolumes(id, next)
      this.forgetHandle(id)
    }
    await this.removeStaleCopies()
    return made
  }

  /**
   * Deletes copies of sealed segments that the index does not name: copies that fell behind
   * (a failed write) or that a crash left behind a move. The index's record is durable
   * before this runs, so what goes is never the copy a restart would read.
   */
  private async removeStaleCopies (): Promise<void> {
    for (const volume of this.home.volumes()) {
      const dir = this.home.dirOf(volume)
      let removed = false
      for (const name of await this.layer.list(dir).catch(() => [] as string[])) {
        const id = parseSegmentFileName(name)
        if (id === undefined || id >= this.current.id || (this.segmentVolumes.get(id) ?? []).includes(volume)) continue
        if (!this.segmentIds.includes(id) && !this.archivedIds.has(id)) continue // not ours to judge
        this.log.warn({ segment: id, volume }, 'removing a stale copy the index does not name')
        await this.removeAfterReads(path.join(dir, name))
        this.home.vacated(id, [volume])
        removed = true
      }
      if (removed) await this.layer.syncDir(dir)
    }
  }

  /**
   * Compaction (001 Fig. 6; 004 cl. 9-15; F5). Frees every version no one needs (superseded
   * and pinned by no snapshot) without copying live data in place: runs of entries that no
   * needed version references become one `free` entry whose data is punched out of the file
   * (fallocate PUNCH_HOLE: the segment keeps its size and offsets, disk use drops), and a
   * segment left with nothing is recycled (deleted). Mostly-dead sealed segments (live bytes
   * under `cleanBelow` of a segment) are cleaned first: their few live versions are moved to
   * the head of the log in `move` entries that keep each version's original sequence number,
   * so every snapshot still sees them. Markers (snapshots, sync points) are kept. With
   * `snapshot`, only that snapshot's partition is compacted, without cleaning.
   * Appends go on meanwhile: they only touch the current segment, and a dead version stays dead.
   */
  async compact (opts: { snapshot?: string, cleanBelow?: number } = {}, onProgress?: (done: number, total: number) => void): Promise<CompactionReport> {
    this.assertOpen()
    return this.maintenance.run(() => this.compactLocked(opts, onProgress))
  }

  private async compactLocked (opts: { snapshot?: string, cleanBelow?: number }, onProgress?: (done: number, total: number) => void): Promise<CompactionReport> {
    this.assertOpen()
    const started = Date.now()
    const report: CompactionReport = { versionsFreed: 0, versionsMoved: 0, segmentsCleaned: 0, entriesFreed: 0, runsPunched: 0, bytesPunched: 0, segmentsRecycled: 0, segmentsInactive: 0, durationMs: 0 }
    const S = this.config.segmentBytes
    let fence = await this.takeFence()
    let range = { from: 1, to: fence.seq }
    if (opts.snapshot !== undefined) {
      const snap = this.snapshotTable.require(opts.snapshot)
      range = { from: (this.snapshotTable.previous(snap.seq)?.seq ?? 0) + 1, to: snap.seq }
    }
    // Cuts at or before the fence: a snapshot taken later cannot fall inside the life of a
    // version whose successor is at or before the fence.
    const cuts = (): number[] => this.snapshotTable.list().map(s => s.seq)
    let analysis = await analyzeVersions(this.index.history(), cuts(), range, fence.seq, await this.windowStart(fence))

    // 1. Clean mostly-dead sealed segments: move their live versions to the head.
    const cleanBelow = opts.snapshot === undefined ? (opts.cleanBelow ?? 0.5) : 0
    if (cleanBelow > 0) {
      const sealed = this.segmentIds.filter(id => fence.mayTouchSegment(id))
      try {
        for (const id of sealed) {
          const lo = firstLiveAtOrAfter(analysis.live, id * S)
          const hi = firstLiveAtOrAfter(analysis.live, (id + 1) * S)
          if (hi === lo || (hi - lo) * this.blockBytes >= cleanBelow * S) continue
          for (let i = lo; i < hi; i += MAX_ENTRY_BLOCKS) {
            const group = []
            for (let j = i; j < Math.min(hi, i + MAX_ENTRY_BLOCKS); j++) {
              group.push({ block: analysis.live.blocks[j], seq: analysis.live.seqs[j], crc: analysis.live.crcs[j], position: analysis.live.positions[j] })
            }
            await this.moveVersions(group)
            report.versionsMoved += group.length
          }
          report.segmentsCleaned++
        }
      } catch (err) {
        // A full pool leaves no room to move into; freeing in place needs none, so go on.
        if (!isLogdiskError(err, 'NO_SPACE')) throw err
        this.log.warn({ err: (err as Error).message }, 'compaction: no room to move live versions; freeing in place only')
      }
      if (report.versionsMoved > 0) {
        // The moved copies are the live ones now: judge again from a fence past the moves.
        fence = await this.takeFence()
        analysis = await analyzeVersions(this.index.history(), cuts(), opts.snapshot === undefined ? { from: 1, to: fence.seq } : range, fence.seq, await this.windowStart(fence))
      }
    }
    // Without backing storage, freeing dead versions gives up the points that read them:
    // the log says so before anything is freed. With it, history stays whole (archived first).
    if (!this.opts.archive) await this.raiseHorizon(analysis.horizon)

    // 2. Free what nothing references; punch it out; recycle empty segments.
    const bySegment = new Map<number, Array<{ seq: number, e: EntryRecord }>>()
    for await (const [seq, e] of this.index.entries(1, fence.seq)) {
      const id = Math.floor(e.position / S)
      if (!fence.mayTouchEntry(seq, e.position) || !this.segmentVolumes.has(id) || this.segmentState.get(id) === 'archived') continue
      let list = bySegment.get(id)
      if (!list) bySegment.set(id, list = [])
      list.push({ seq, e })
    }
    const freeable = (x: { seq: number, e: EntryRecord }): boolean => {
      if (x.e.freed === true) return true
      if (x.e.kind === EntryKind.trim) return x.seq >= range.from && x.seq <= range.to && !analysis.liveTrims.has(x.seq)
      if (x.e.kind !== EntryKind.write && x.e.kind !== EntryKind.move) return false
      if (x.e.kind === EntryKind.write && (x.seq < range.from || x.seq > range.to)) return false
      const dataStart = x.e.position + tableBytes({ kind: x.e.kind as EntryKind, count: x.e.count })
      return !anyLiveIn(analysis.live, dataStart, dataStart + x.e.count * this.blockBytes)
    }
    const recycle: number[] = []
    const punches: Array<{ files: string[], from: number, to: number }> = []
    // Entries freed, staged in the batch only once their free headers are durable.
    const freedEntries: Array<[number, EntryRecord]> = []
    let done = 0
    for (const [id, entries] of [...bySegment].sort((a, b) => a[0] - b[0])) {
      this.assertNotClosing()
      onProgress?.(done++, bySegment.size)
      const runs: Array<{ first: number, last: number, fresh: boolean }> = []
      for (let i = 0; i < entries.length; i++) {
        if (!freeable(entries[i])) continue
        const run = runs[runs.length - 1]
        if (run && run.last === i - 1) { run.last = i; run.fresh ||= !entries[i].e.freed } else runs.push({ first: i, last: i, fresh: !entries[i].e.freed })
      }
      const fresh = runs.filter(r => r.fresh)
      if (fresh.length > 0) {
        // With backing storage, history stays complete: the whole segment is archived
        // before any of it is punched, and reads of dead versions fetch it back.
        if (this.opts.archive) await this.ensureArchived(id)
        const segment = await this.segment(id)
        const headers: Array<[number, Buffer]> = []
        for (const run of fresh) {
          const first = entries[run.first]
          const last = entries[run.last]
          const start = first.e.position % S
          const end = last.e.position % S + entryBytes({ kind: last.e.kind as EntryKind, count: last.e.count, payloadBytes: last.e.kind === EntryKind.trim ? 0 : last.e.count * this.blockBytes })
          headers.push([start, encodeFree(first.seq, last.seq, last.e.timeMs, end - start)])
          const from = Math.ceil((start + ENTRY_HEADER_BYTES) / 4096) * 4096
          const to = Math.floor(end / 4096) * 4096
          // Exactly the copies that took the free header, wherever the segment lives later.
          if (to > from) punches.push({ files: segment.volumes.map(v => path.join(this.home.dirOf(v), segmentFileName(id))), from, to })
          for (let i = run.first; i <= run.last; i++) {
            const x = entries[i]
            if (x.e.freed) continue
            freedEntries.push([x.seq, { ...x.e, freed: true }])
          }
        }
        // A header written over another can be torn by a crash: the index holds the writes
        // first, and opening the store redoes them whole (recovery.ts).
        await this.index.putPending({ segment: id, volumes: segment.volumes, headers })
        for (const [at, header] of headers) await segment.handle.writev([header], at)
        await segment.handle.datasync() // the free headers are durable before any data goes
        await this.index.clearPending()
        for (const [seq, e] of freedEntries.splice(0)) {
          this.batch.entries.set(seq, e)
          report.entriesFreed++
        }
      }
      if (entries.every(freeable)) recycle.push(id)
    }
    report.segmentsInactive = this.markInactive(fence)
    // Dead versions leave the index (their bytes may stay until their whole entry is free),
    // unless backing storage keeps them: then every point in time stays restorable.
    report.versionsFreed = analysis.deadCount
    if (!this.opts.archive) {
      for (const [seq, blocks] of analysis.deadBySeq) for (const block of blocks) this.batch.historyDeletes.push(block, seq)
    }
    await this.commitDurably() // the index forgets freed versions before any byte goes
    // Reads that looked a freed version up before the commit may still be reading it.
    await this.reads.drain()
    for (const p of punches) {
      for (const file of p.files) await this.layer.punchHole(file, p.from, p.to - p.from)
      report.runsPunched++
      report.bytesPunched += p.to - p.from
    }
    for (const id of recycle) {
      const volumes = this.segmentVolumes.get(id) ?? []
      this.forgetHandle(id)
      await this.removeEveryCopy(id)
      this.segmentVolumes.delete(id)
      this.home.vacated(id, volumes)
      if (this.archivedIds.has(id)) {
        this.segmentState.set(id, 'archived') // its history is on backing storage
      } else {
        this.segmentIds = this.segmentIds.filter(s => s !== id)
        this.segmentState.set(id, 'recycled')
        this.recycledCount++
      }
      this.recordSegment(id)
      if (!this.archivedIds.has(id)) this.segmentState.delete(id)
      report.segmentsRecycled++
    }
    await this.commitDurably()
    onProgress?.(bySegment.size, bySegment.size)
    report.durationMs = Date.now() - started
    this.log.info(report, 'compacted')
    return report
  }

  /**
   * Appends a move entry holding these versions (read from where they are now, CRC-checked):
   * the cleaning step of compaction. Each keeps its block and original sequence number; the
   * map takes the new place only for a version that is still the block's newest.
   */
  private async moveVersions (versions: Array<{ block: number, seq: number, crc: number, position: number }>): Promise<void> {
    const B = this.blockBytes
    const data = Buffer.allocUnsafe(versions.length * B)
    for (let i = 0; i < versions.length; i++) {
      const v = versions[i]
      const got = await this.readRun(v.block, 1, v.position, Uint32Array.of(v.crc))
      got.copy(data, i * B)
    }
    await this.appendLock.run(async () => {
      const need = ENTRY_HEADER_BYTES + versions.length * (MOVE_RECORD_BYTES + B)
      if (this.current.tail + need > this.config.segmentBytes) await this.roll()
      const seq = this.seq + 1
      const timeMs = this.nextTimeMs()
      const header = encodeMoveHeader(seq, timeMs, versions, B)
      await this.appendEntry([header, data], () => {
        this.seq = seq
        this.lastTimeMs = timeMs
        const dataPosition = this.completedPosition - data.length
        this.batch.entries.set(seq, { kind: EntryKind.move, timeMs, position: dataPosition - header.length, block: 0, count: versions.length })
        versions.forEach((v, i) => {
          this.map.set(v.block, dataPosition + i * B, v.crc, v.seq)
          this.batch.addBlock(v.block, v.seq, dataPosition + i * B, v.crc)
        })
      })
    })
  }

  /** Disk bytes (allocated, after hole punching) of the store's segments, by state. */
  async spaceByState (): Promise<Record<string, number>> {
    const out: Record<string, number> = { current: 0, active: 0, inactive: 0, archived: 0, baseline: 0 }
    try {
      out.baseline = fs.statSync(baselineFiles(this.dir).image).blocks * 512
    } catch { /* no baseline */ }
    for (const id of this.segmentIds) {
      for (const volume of this.segmentVolumes.get(id) ?? []) {
        try {
          const st = fs.statSync(path.join(this.home.dirOf(volume), segmentFileName(id)))
          out[this.segmentState.get(id) ?? 'active'] += st.blocks * 512
        } catch { /* missing copy: verify reports it */ }
      }
    }
    return out
  }

  /** Entry summaries (no data) with seq in [from, to], in log order: what `log` lists. */
  async * entries (from = 1, to = Number.MAX_SAFE_INTEGER): AsyncGenerator<EntryRecord & { seq: number }> {
    this.assertOpen()
    await this.checkpointThrough(this.seq)
    for await (const [seq, entry] of this.index.entries(from, Math.min(to, this.seq))) yield { ...entry, seq }
  }

  /**
   * The point in the log that `spec` names: a snapshot name, a sequence number (a sync
   * point's id is its sequence number), an ISO time, or a sync note (the newest such sync).
   */
  async resolvePoint (spec: string): Promise<{ seq: number, timeMs: number, what: string }> {
    this.assertOpen()
    await this.checkpointThrough(this.seq)
    if (this.seq === 0) throw new LogdiskError('NOT_FOUND', 'the log is empty: there is no point to go back to')
    const horizon = this.horizon
    const at = async (seq: number, what: string) => {
      if (seq <= horizon) {
        let oldest = ''
        for await (const [s, e] of this.index.entries(horizon + 1, this.seq)) { oldest = `sequence ${s} (${new Date(e.timeMs).toISOString()})`; break }
        throw new LogdiskError('BAD_ARGUMENT', `${what} is older than the history this store kept (compaction freed versions up to sequence ${horizon}; history.keep=${formatKeep(this.historyKeepMs)}); the oldest point that can be restored is ${oldest || 'the newest write'}, and every snapshot`)
      }
      return { seq, timeMs: (await this.index.entry(seq))?.timeMs ?? 0, what }
    }
    const snap = this.snapshotTable.get(spec)
    if (snap) return { seq: snap.seq, timeMs: snap.timeMs, what: `snapshot ${snap.name}` }
    if (/^\d+$/.test(spec)) {
      const seq = Number(spec)
      if (seq < 1 || seq > this.seq) throw new LogdiskError('BAD_ARGUMENT', `sequence ${seq} is not in the log (it holds 1 to ${this.seq})`)
      return at(seq, `sequence ${seq}`)
    }
    if (/^\d{4}-\d{2}-\d{2}/.test(spec)) {
      const t = Date.parse(spec)
      if (Number.isNaN(t)) throw new LogdiskError('BAD_ARGUMENT', `"${spec}" is not an ISO time (like 2026-11-21T10:00:00Z)`)
      if (t > this.now()) throw new LogdiskError('BAD_ARGUMENT', `${spec} is in the future`)
      const first = await this.index.entry(1)
      if (!first || t < first.timeMs) {
        throw new LogdiskError('BAD_ARGUMENT', `${spec} is before the first write (the log starts at ${new Date(first?.timeMs ?? 0).toISOString()})`)
      }
      // Times never decrease along the log: the newest entry at or before t, by bisection.
      let lo = 1
      let hi = this.seq
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2)
        const e = await this.index.entry(mid)
        if (e && e.timeMs <= t) lo = mid
        else hi = mid - 1
      }
      return at(lo, `${new Date(t).toISOString()} (sequence ${lo})`)
    }
    for await (const [seq, e] of this.index.entries(1, this.seq, true)) {
      if (e.kind === EntryKind.sync && e.payload?.note === spec) return at(seq, `sync ${seq} "${spec}"`)
    }
    throw new LogdiskError('NOT_FOUND', `--at "${spec}" is not a snapshot name, sequence number, ISO time or sync note`)
  }

  /**
   * The image as it was at sequence `seq`, block by block in block order: for every block the
   * newest version at or before seq, rebuilt from the index of every version (004 cl. 10).
   * Never-written blocks are skipped (holes).
   */
  async * imageAt (seq: number): AsyncGenerator<{ block: number, data: Buffer }> {
    this.assertOpen()
    await this.checkpointThrough(seq)
    // One read epoch for the whole walk: the positions come from one view of the index.
    const epoch = this.reads.enter()
    try {
      let block = -1
      let best: { position: number, crc: number } | undefined
      const crc = new Uint32Array(1)
      // A block trimmed at the point is a hole, like one never written.
      for await (const [b, vseq, position, vcrc] of this.index.history()) {
        if (b !== block) {
          if (best && best.position >= 0) { crc[0] = best.crc; yield { block, data: await this.readRun(block, 1, best.position, crc) } }
          block = b
          best = undefined
        }
        if (vseq <= seq) best = { position, crc: vcrc }
      }
      if (best && best.position >= 0) { crc[0] = best.crc; yield { block, data: await this.readRun(block, 1, best.position, crc) } }
    } finally {
      this.reads.exit(epoch)
    }
  }

  snapshotNamed (name: string): SnapshotRecord {
    return this.snapshotTable.require(name)
  }

  /** fdatasync of every sealed segment not yet synced (oldest first), then the current one. */
  private async syncAll (): Promise<void> {
    while (this.unsyncedSealed.length > 0) {
      const oldest = this.unsyncedSealed[0]
      await oldest.sync() // a flush and a checkpoint may both be here: each waits, one removes
      if (this.unsyncedSealed[0] === oldest) this.unsyncedSealed.shift()
    }
    await this.current.sync()
    await this.recordDrops()
  }

  /** Makes every completed write durable (the image's fsync/flush). */
  flush (): Promise<void> {
    this.assertOpen()
    return this.appendLock.run(() => this.syncAll())
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
    const cp: Checkpoint = { seq: this.seq, position: this.completedPosition, timeMs: this.now() }
    this.batch = new IndexBatch()
    this.checkpointing = (async () => {
      try {
        await this.syncAll()
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

  /**
   * Commits the index and syncs LevelDB's log: for changes that precede deleting a file (a
   * moved, archived or recycled segment), which must survive power loss, not only kill -9.
   */
  private async commitDurably (): Promise<void> {
    await this.checkpointing
    await this.checkpoint()
    await this.index.sync()
  }

  status (): StoreStatus {
    const segments = { current: 0, active: 0, inactive: 0, archived: 0, recycled: this.recycledCount }
    for (const id of this.segmentIds) segments[this.segmentState.get(id) ?? 'active']++
    let logBytes = 0
    for (const id of this.segmentIds) logBytes += id === this.current.id ? this.current.tail : this.config.segmentBytes
    return {
      dir: this.dir,
      sizeBytes: this.sizeBytes,
      blockBytes: this.blockBytes,
      segmentBytes: this.config.segmentBytes,
      writtenBytes: (this.map.count - this.map.trimmed) * this.blockBytes,
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
      recovery: this.recovery,
      history: { horizonSeq: this.horizon, keepMs: this.historyKeepMs }
    }
  }

  /**
   * Changes the volume's size (logdisk resize). Growing is O(1): the new blocks read as zeros.
   * Shrinking is refused (BAD_ARGUMENT, nothing changed) while any version of a block past the
   * new end exists: in the current volume, a snapshot or the history. Persists store.json.
   */
  async resize (sizeBytes: number): Promise<{ fromBytes: number, toBytes: number }> {
    this.assertOpen()
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % this.blockBytes !== 0) {
      throw new LogdiskError('BAD_ARGUMENT', `size ${sizeBytes} must be a positive multiple of the block size (${this.blockBytes})`)
    }
    return this.maintenance.run(async () => {
      const fromBytes = this.config.sizeBytes
      const first = sizeBytes / this.blockBytes
      if (sizeBytes < fromBytes) await this.checkpointThrough(this.seq) // every version is in LevelDB
      return this.appendLock.run(async () => {
        if (sizeBytes < fromBytes) {
          let past: number | undefined
          this.map.forEach(block => { if (block >= first && (past === undefined || block < past)) past = block })
          if (past === undefined) {
            for await (const [block] of this.index.history(first)) { past = block; break }
          }
          if (past !== undefined) {
            throw new LogdiskError('BAD_ARGUMENT', `cannot shrink ${this.dir} to ${sizeBytes} bytes: block ${past} (byte ${past * this.blockBytes}) past the new end was written (in the current volume, a snapshot or the history); shrink the filesystem and keep the data below the new end, or keep the size`)
          }
        }
        this.config.sizeBytes = sizeBytes
        writeConfig(this.dir, this.config)
        return { fromBytes, toBytes: sizeBytes }
      })
    })
  }

  /** Reads every entry of the log, checks every CRC and that the index agrees with the log. */
  /**
   * `copies`: how many copies each local segment should have (the pool's mirror policy);
   * fewer is reported as degraded.
   */
  verify (opts: { copies?: number, onProgress?: (doneBytes: number, totalBytes: number) => void } = {}): Promise<VerifyReport> {
    this.assertOpen()
    // A pass (compaction punching, a drain moving files) would show up as damage mid-read.
    return this.maintenance.run(() => this.verifyLocked(opts.copies ?? 1, opts.onProgress))
  }

  private async verifyLocked (copies: number, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<VerifyReport> {
    // Only what is complete: an append in flight past `end` is not a torn entry.
    const end = await this.appendLock.run(async () => {
      await this.syncAll()
      return this.completedPosition
    })
    await this.checkpointThrough(this.seq)
    await this.checkpoint() // index changes that wait for a retry (a failed commit) go in first
    const segmentIds = [...this.segmentIds]
    return verifyStore({
      layer: this.layer,
      home: this.home,
      segmentVolumes: new Map(this.segmentVolumes),
      open: id => this.segmentState.get(id) === 'archived'
        ? this.fetchArchived(id)
        : Segment.open(this.layer, this.home, this.segmentVolumes.get(id) ?? [], id, this.geometry),
      geometry: this.geometry,
      segmentIds,
      copies,
      upTo: this.lastCheckpoint,
      end,
      map: this.map,
      index: this.index,
      baseline: await this.baselineForVerify(),
      onProgress
    })
  }

  /** Flushes, checkpoints and releases the store (and its lock). */
  async close (): Promise<void> {
    if (this.closed) return
    if (this.timer) clearInterval(this.timer)
    this.closing = true // a pass in flight stops at its next step (each step is crash-safe)
    await this.maintenance.idle().catch(() => undefined) // a pass in flight ends first
    await this.appendLock.idle()
    await this.syncAll()
    await this.checkpointThrough(this.seq)
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
    if (this.baselineFile) await this.baselineFile.then(h => h.close()).catch(() => undefined)
    for (const segment of this.openSegments.values()) await segment.close().catch(() => undefined)
    this.openSegments.clear()
    await this.index.close()
    if (!this.opts.readOnly) fs.rmSync(path.join(this.dir, HOLDER_FILE), { force: true })
  }

  /**
   * Each block's checksum as it was at cut `seq`, in block order, from the index alone (no
   * data read); never-written blocks are skipped. What a stream's content identity hashes.
   */
  async * blockCrcsAt (seq: number): AsyncGenerator<[block: number, crc: number]> {
    this.assertOpen()
    await this.checkpointThrough(seq)
    let block = -1
    let crc: number | undefined
    // A block trimmed at the cut is absent, like one never written (it reads as zeros).
    for await (const [b, vseq, position, vcrc] of this.index.history()) {
      if (b !== block) {
        if (crc !== undefined) yield [block, crc]
        block = b
        crc = undefined
      }
      if (vseq <= seq) crc = position < 0 ? undefined : vcrc
    }
    if (crc !== undefined) yield [block, crc]
  }
}

/** Index of the first block of `data` whose CRC32C is not the expected one, or -1. */
function firstBadBlock (data: Buffer, crcs: Uint32Array, blockBytes: number): number {
  for (let i = 0; i < crcs.length && (i + 1) * blockBytes <= data.length; i++) {
    if (crc32c(data.subarray(i * blockBytes, (i + 1) * blockBytes)) !== crcs[i]) return i
  }
  return -1
}

/** A home that also lists <store>/cache (archived segments fetched for an index rebuild). */
function withCacheVolume (home: SegmentHome, cacheDir: string): SegmentHome {
  return {
    dirOf: v => v === CACHE_VOLUME ? cacheDir : home.dirOf(v),
    volumes: () => [...home.volumes(), CACHE_VOLUME],
    place: id => home.place(id),
    occupied: (id, vs) => home.occupied(id, vs.filter(v => v !== CACHE_VOLUME)),
    vacated: (id, vs) => home.vacated(id, vs.filter(v => v !== CACHE_VOLUME))
  }
}

/** Fetches every archived segment into `cacheDir` for an index rebuild; returns their ids. */
async function fetchAllArchived (layer: FileLayer, cacheDir: string, link: ArchiveLink, log: Logger): Promise<number[]> {
  const ids = await link.list()
  await layer.mkdirp(cacheDir)
  for (const id of ids) {
    const h = await layer.open(path.join(cacheDir, segmentFileName(id)), true)
    try {
      await h.truncate(0)
      await h.writev([await link.get(id)], 0)
    } finally {
      await h.close()
    }
  }
  if (ids.length > 0) log.warn({ segments: ids.length, from: link.describe() }, 'rebuilding the index: fetched archived segments back to scan them')
  return ids
}

/** history.keep as a user writes it. */
function formatKeep (ms: number): string {
  if (!Number.isFinite(ms)) return 'forever'
  for (const [unit, n] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms > 0 && ms % n === 0) return `${ms / n}${unit}`
  return `${ms}ms`
}

/** Deletes the files of a flat directory (the fetch cache), through the store's file layer. */
async function removeFiles (layer: FileLayer, dir: string): Promise<void> {
  const names = await layer.list(dir).catch(() => [] as string[])
  for (const name of names) await layer.remove(path.join(dir, name))
}

function mergeBatches (older: IndexBatch, newer: IndexBatch): IndexBatch {
  const out = new IndexBatch()
  for (const h of [older.history, newer.history]) for (const n of h) out.history.push(n)
  for (const h of [older.historyDeletes, newer.historyDeletes]) for (const n of h) out.historyDeletes.push(n)
  for (const [k, v] of older.segments) out.segments.set(k, v)
  for (const [k, v] of newer.segments) out.segments.set(k, v)
  for (const b of [older, newer]) {
    for (const [k, v] of b.entries) out.entries.set(k, v)
    for (const [k, v] of b.snapshots) out.snapshots.set(k, v)
    for (const [k, v] of b.counters) out.counters.set(k, v)
  }
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
