import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { exactSize, formatBytes } from '../size-text'
import type { PassFence } from './pass-fence'
import { archivePass, type ArchiveOptions, type ArchiveReport } from './archive-pass'
import { keepsHistory, type ArchiveLink } from './archive-link'
import { portableRows } from './portable-index'
import { readBaselineOrigins } from './baseline-origins'
import { baselineFiles } from './baseline'
import { mergeIntoBaseline } from './baseline-pass'
import { lowerBound, type CompactionReport } from './compaction'
import { compactionPass, type CompactOptions } from './compaction-pass'
import { writeConfig, type CreateOptions, type StoreConfig } from './config'
import { nodeFileLayer, readUpTo, type FileLayer } from './file-layer'
import { EntryKind, SEGMENT_HEADER_BYTES, TRIMMED, segmentFileName } from './format'
import { History } from './history'
import type { EntryRecord, SegmentRecord, SnapshotRecord } from './index-db'
import { IndexWriter } from './index-writer'
import { LifeCycle } from './life-cycle'
import { LogAppender } from './log-appender'
import { DEFAULT_HISTORY_KEEP_MS, type OpenOptions } from './open-options'
import { StoreState, type BlocksRead, type IoOptions, type StoreParts } from './parts'
import { Placement } from './placement'
import { ReadEpochs } from './read-epochs'
import { Reader } from './reader'
import type { RecoveryReport } from './recovery'
import { Segment } from './segment'
import type { SegmentHome } from './segment-home'
import { SegmentTable } from './segment-table'
import { DEFAULT_VOLUME_ID_POLICY, type DeleteMarker, type SnapshotMarker, type VolumeIdPolicy } from './snapshots'
import { INDEX_DIR, createStoreDir, openStoreDir, removeHolder, type OpenedStore } from './store-open'
import type { WritebackGuard } from './writeback-guard'
import { saveBlockMap } from './block-map-file'
import { verifyStore, type VerifyReport } from './verify'

export { DEFAULT_HISTORY_KEEP_MS, type OpenOptions } from './open-options'

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
  /** Present when an fdatasync of a store file still in use failed: syncing it fails until the store is opened again. */
  writebackFailed?: true
}

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
 *
 * This class is the facade: it checks arguments, takes the locks and hands each call to the
 * part whose job it is (parts.ts lists them; docs/ARCHITECTURE.md walks through them).
 * Foreground calls (read, write, discard, markers, flush) run beside background passes
 * (compaction, baseline, archive, relocation, repair, verify), which run one at a time under
 * the maintenance lock and touch only what their fence allows (pass-fence.ts).
 */
export class Store {
  private readonly p: StoreParts
  private readonly state: StoreState
  /** The failed fdatasyncs of this open (writeback-guard.ts). */
  private readonly writebacks: WritebackGuard
  /** Asked when a write or discard finds no room (setNoSpaceHandler). */
  private noSpace?: () => Promise<boolean>

  private constructor (
    readonly dir: string,
    readonly config: StoreConfig,
    readonly home: SegmentHome,
    readonly recovery: RecoveryReport,
    o: OpenedStore,
    opts: OpenOptions
  ) {
    this.state = new StoreState(dir)
    this.writebacks = o.writebacks
    const p = {
      dir,
      config,
      geometry: { uuid: config.uuid, blockBytes: config.blockBytes, segmentBytes: config.segmentBytes },
      layer: o.layer,
      home,
      db: o.index,
      map: o.map,
      snapshotTable: o.recovered.snapshots,
      logger: o.logger,
      opts,
      reads: new ReadEpochs(),
      state: this.state,
      now: () => opts.clock ? opts.clock() : Date.now()
    } as StoreParts
    p.segments = new SegmentTable(p, o.ids, o.volumes, o.states, o.archived, o.recycled, o.unpunched)
    p.reader = new Reader(p)
    p.log = new LogAppender(p, o.recovered.current, o.recovered.seq, o.lastTimeMs)
    p.reader.adoptOpen(o.recovered.current)
    p.index = new IndexWriter(p, o.recovered.seq, p.log.completedPosition)
    p.history = new History(p, o.horizon)
    p.lifeCycle = new LifeCycle(p)
    p.placement = new Placement(p)
    this.p = p
  }

  static async create (dir: string, opts: CreateOptions, layer: FileLayer = nodeFileLayer): Promise<StoreConfig> {
    return createStoreDir(dir, opts, layer)
  }

  static async open (dir: string, opts: OpenOptions = {}): Promise<Store> {
    const o = await openStoreDir(dir, opts)
    try {
      const store = new Store(dir, o.config, o.home, o.recovered.report, o, opts)
      o.onDrop((id, volume) => store.copyDropped(id, volume))
      for (const [id, volume] of o.drops) store.copyDropped(id, volume)
      // A copy of the current segment that did not survive (a crash while a roll created the
      // copies one after the other): appends go on without it, recorded as degraded.
      const current = o.recovered.current
      for (const v of o.volumes.get(current.id) ?? []) {
        if (!current.volumes.includes(v)) store.copyDropped(current.id, v)
      }
      // The current segment lies on a volume that became read-only: the log goes on in a new
      // segment where the pool has room (an append there failed with READ_ONLY, and the open
      // with it, while another volume had room).
      if (opts.readOnly === undefined && o.recovered.report.readOnlySegments?.includes(current.id) === true) {
        // No room elsewhere: the store still opens and reads; appends fail (READ_ONLY) until there is.
        await store.p.log.seal(current.id).catch(err => {
          if (!isLogdiskError(err, 'NO_SPACE')) throw err
          o.logger.warn({ segment: current.id, err: (err as Error).message }, 'the current segment lies on a read-only pool volume and no other volume has room: writes fail until one has')
        })
      }
      return store
    } catch (err) {
      await o.index.close()
      throw err
    }
  }

  get sizeBytes (): number { return this.config.sizeBytes }
  get blockBytes (): number { return this.config.blockBytes }
  /** Reads and writevs done inline since open (IoOptions.inline), and reads served at once from the page cache beside other requests (FileHandle.readCached). */
  get inlineIo (): { reads: number, writes: number, cachedReads: number } { return { reads: this.p.reader.inlineReads, writes: this.p.log.inlineWrites, cachedReads: this.p.reader.cachedReads } }
  /** Segments read whole into the page cache since open because image reads kept missing in them (segment-warmer.ts). */
  get warmedSegments (): number { return this.p.reader.warmedSegments }
  get historyKeepMs (): number { return this.p.opts.historyKeepMs ?? DEFAULT_HISTORY_KEEP_MS }

  /** Changes the history window (policy set history.keep on a mounted store). */
  setHistoryKeepMs (ms: number): void {
    this.p.history.setKeepMs(ms)
  }

  /**
   * Gives up every point up to the newest write: a history marker in the log raises the
   * horizon, so restores of those points are refused from now on (a rebuilt index knows it
   * too) and compaction may free what only they held. For a promoted clone, whose earlier
   * points read their unwritten blocks through a parent it no longer follows.
   */
  async giveUpPointsSoFar (): Promise<number> {
    const seq = this.p.log.seq
    await this.p.history.raiseHorizon(seq)
    return seq
  }

  /**
   * Sets (or removes) the backing storage while open: `policy set archive.target` on a mount.
   * It takes effect between passes (it waits for the one running): a compaction judges what
   * it may free by whether backing storage keeps history, so one whose archive went away
   * between judging and freeing punched versions without archiving them and dropped them from
   * the index with no history marker, and a restore point inside the history window then read
   * older data without an error (found by review; test/archive-detach.test.ts).
   */
  async attachArchive (link: ArchiveLink | undefined): Promise<void> {
    await this.p.lifeCycle.maintenance.run(async () => {
      (this.p.opts as { archive?: ArchiveLink }).archive = link
    })
  }

  private assertOpen (): void {
    this.state.assertOpen()
  }

  // ---- Foreground I/O: the current volume ----

  /**
   * Reads `length` bytes at `offset` of the current volume into `into` (or a new buffer).
   * Reads stop at the end of the volume: the returned buffer is shorter then.
   */
  read (offset: number, length: number, into?: Buffer, opts?: IoOptions): Promise<Buffer> {
    return this.p.reader.readCurrent(offset, length, into, opts)
  }

  /** Opened read-only: nothing in the store directory is written (verify, send, restore, ...). */
  get readOnly (): boolean {
    return this.p.opts.readOnly !== undefined
  }

  /**
   * Writes `data` at byte `offset`. Unaligned writes read the edge blocks and write whole
   * blocks (read-modify-write inside the store). Resolves once the bytes are in the log file
   * (durable after flush()). `blockCrcs`: the CRC32C of each block of a block-aligned `data`,
   * when the caller has them already (the FUSE transport's readers compute them off the event
   * loop); they go into the entry as they are, so they must be of these very bytes.
   */
  write (offset: number, data: Buffer, blockCrcs?: Uint32Array, opts?: IoOptions): Promise<void> {
    try {
      this.assertOpen()
      if (!Number.isSafeInteger(offset) || offset < 0) throw new LogdiskError('BAD_ARGUMENT', `bad write offset ${offset}`)
      if (offset + data.length > this.sizeBytes) {
        throw new LogdiskError('OUT_OF_RANGE', `write of ${formatBytes(data.length)} at byte ${offset} runs past the end of the ${exactSize(this.sizeBytes)} volume`)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    if (data.length === 0) return Promise.resolve()
    return this.retryOnNoSpace(() => this.p.log.write(offset, data, blockCrcs, opts))
  }

  /**
   * What a write or discard that finds no room (NO_SPACE: the pool or its disk is full) asks
   * before it fails: the mount daemon gives a compaction run now (policy/engine.ts
   * relieveNoSpace) that resolves true if it freed room, and the write is then tried once
   * more. A pool full of dead versions failed writes with ENOSPC until the next policy tick
   * compacted it (an ext4 above turned them into EIO and could not be mounted again while the
   * pool stayed full; helper-75's D6). A write appended nothing when it failed, and writing the
   * same bytes again is harmless, so a retry is safe; it runs outside the append lock, which
   * the compaction's moves take.
   */
  setNoSpaceHandler (handler: (() => Promise<boolean>) | undefined): void {
    this.noSpace = handler
  }

  private retryOnNoSpace (attempt: () => Promise<void>): Promise<void> {
    const handler = this.noSpace
    if (handler === undefined) return attempt()
    return attempt().catch(async err => {
      if (!isLogdiskError(err, 'NO_SPACE') || this.state.closing) throw err
      if (!(await handler().catch(() => false))) throw err
      return attempt()
    })
  }

  /**
   * Discards (TRIM, F11) `length` bytes at `offset` of the current volume, the FALLOCATE
   * PUNCH_HOLE and ZERO_RANGE of the image: they read as zeros from now on, while snapshots and
   * points before keep their data, and compaction frees what only the discarded versions held.
   * Whole blocks become trim entries (only blocks that hold data: the others read as zeros
   * already, and a trim of every block of a fresh disk, as mkfs does, costs nothing; on a
   * clone, every block not trimmed already, since one it never wrote reads its parent's); the
   * partial blocks at the edges are written as zeros. Resolves once it is in the log (durable
   * after flush()), like a write.
   */
  discard (offset: number, length: number): Promise<void> {
    try {
      this.assertOpen()
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new LogdiskError('BAD_ARGUMENT', `bad discard range ${offset}+${length}`)
      if (offset + length > this.sizeBytes) {
        throw new LogdiskError('OUT_OF_RANGE', `discard of ${formatBytes(length)} at byte ${offset} runs past the end of the ${exactSize(this.sizeBytes)} volume`)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    if (length === 0) return Promise.resolve()
    const log = this.p.log
    return this.retryOnNoSpace(() => log.lock.run(() => log.discardLocked(offset, length)))
  }

  /**
   * Makes every write called before it durable (the image's fsync/flush). It waits for the
   * writes queued before it, then syncs without the append lock: writes go on during the
   * fdatasync, and flushes that arrive together share one.
   */
  flush (): Promise<void> {
    this.assertOpen()
    return this.p.log.flush()
  }

  /**
   * An fdatasync of a file the store still uses failed: the kernel may have dropped those
   * writes from its cache unwritten, and nothing that syncs that file succeeds until the store
   * is opened again (a flush, when it is the log's: Segment.sync; a baseline merge...).
   */
  get writebackFailed (): boolean {
    return this.p.log.writebackFailed || this.writebacks.failed
  }

  /**
   * Writes the block versions appended since the last checkpoint into LevelDB as one batch,
   * with the log position they cover (index-writer.ts).
   */
  checkpoint (): Promise<void> {
    return this.p.index.checkpoint()
  }

  // ---- Markers: sync points and snapshots ----

  /**
   * Writes a sync marker (004 cl. 5): a consistency point with a time and a note. `frozen`
   * records that the filesystem on the image was frozen around it (application-consistent).
   * Returns the point's id, which is its sequence number.
   */
  async syncPoint (note = '', frozen = false): Promise<{ seq: number, timeMs: number }> {
    this.assertOpen()
    const log = this.p.log
    const e = await log.lock.run(() => log.appendMarkerLocked(EntryKind.sync, { note, frozen }))
    return { seq: e.seq, timeMs: e.timeMs }
  }

  /**
   * Cuts the log: O(1) whatever was written or how many snapshots exist (000 cl. 1-2). The
   * cut is one marker entry; the image of the snapshot is every block's newest version at or
   * before it.
   */
  async snapshot (opts: { name?: string, id?: number, frozen?: boolean, idPolicy?: VolumeIdPolicy, createdMs?: number } = {}): Promise<SnapshotRecord> {
    this.assertOpen()
    const { log, snapshotTable } = this.p
    const e = await log.lock.run(async () => {
      const name = opts.name ?? `snap-${log.seq + 1}`
      snapshotTable.checkNewName(name)
      const { id, displaced } = snapshotTable.assignId(opts.idPolicy ?? DEFAULT_VOLUME_ID_POLICY, opts.id)
      // The size goes with the cut (under the append lock, which a resize holds while it
      // changes it): the snapshot's image keeps it whatever the volume is resized to later.
      const marker: SnapshotMarker = { name, id, frozen: opts.frozen ?? false, ...(displaced ? { displaced: displaced.seq } : {}), ...(opts.createdMs !== undefined ? { createdMs: opts.createdMs } : {}), sizeBytes: this.config.sizeBytes }
      return log.appendMarkerLocked(EntryKind.snapshot, marker as unknown as Record<string, unknown>)
    })
    // No checkpoint here: the marker is durable, the index catches up in the background (or
    // at the first read of the snapshot), so the cut costs one append and one fdatasync.
    return snapshotTable.require((e.payload as unknown as SnapshotMarker).name)
  }

  /**
   * Throws what `snapshot(opts)` would throw now for its name and volume id (a bad or taken
   * name, an id the policy cannot give), changing nothing: for callers that must not write
   * before a cut that would be refused (receive).
   */
  checkSnapshot (opts: { name: string, id?: number, idPolicy?: VolumeIdPolicy }): void {
    this.assertOpen()
    this.p.snapshotTable.checkNewName(opts.name)
    this.p.snapshotTable.assignId(opts.idPolicy ?? DEFAULT_VOLUME_ID_POLICY, opts.id)
  }

  /** Deletes a snapshot: its image goes, its id returns to the pool (001 delete volume). */
  async deleteSnapshot (name: string): Promise<SnapshotRecord> {
    this.assertOpen()
    const { log, snapshotTable } = this.p
    return log.lock.run(async () => {
      const snap = snapshotTable.require(name)
      const marker: DeleteMarker = { name, seq: snap.seq }
      await log.appendMarkerLocked(EntryKind.deleteSnapshot, marker as unknown as Record<string, unknown>)
      return snap
    })
  }

  snapshots (): SnapshotRecord[] {
    return this.p.snapshotTable.list()
  }

  snapshotNamed (name: string): SnapshotRecord {
    return this.p.snapshotTable.require(name)
  }

  // ---- The past: snapshots and points in time ----

  /**
   * The size of a snapshot's image: the volume's size at its cut, which its marker records;
   * the volume's current size for a snapshot of a release before it (no size in its marker).
   */
  snapshotSize (snap: Pick<SnapshotRecord, 'sizeBytes'>): number {
    return snap.sizeBytes ?? this.sizeBytes
  }

  /**
   * The volume's size at sequence `seq`: a snapshot's there (snapshotSize); else the size
   * before the first resize the log records after `seq` (Store.resize appends a marker for
   * each); else the current size. What an image of a past point (restore, export) is cut to.
   */
  sizeAt (seq: number): number {
    const snap = this.p.snapshotTable.list().find(s => s.seq === seq)
    if (snap) return this.snapshotSize(snap)
    return this.p.snapshotTable.sizeAt(seq, this.sizeBytes)
  }

  /**
   * sizeAt(`seq`), taken under the append lock, which a resize holds from its marker until
   * store.json has the new size: never read between the two (the marker logged, the size not
   * changed yet), where a point at or after the marker would get the old size. For what must
   * describe the volume as of a log position, whatever resize runs meanwhile (a replica's
   * manifest: replicator.ts).
   */
  async sizeAtSettled (seq: number): Promise<number> {
    this.assertOpen()
    return await this.p.log.lock.run(async () => this.sizeAt(seq))
  }

  /** Reads a snapshot image: each block as it was at the snapshot's cut (000 cl. 10-11), up to the snapshot's size. */
  async readSnapshot (name: string, offset: number, length: number, into?: Buffer, opts?: IoOptions): Promise<Buffer> {
    this.assertOpen()
    const snap = this.p.snapshotTable.require(name)
    return this.p.reader.readAt(snap.seq, offset, length, into, opts, this.snapshotSize(snap))
  }

  /** Reads one block as it was at cut `seq` (zeros if it was never written by then). */
  async readBlockAt (seq: number, block: number): Promise<Buffer> {
    this.assertOpen()
    return this.p.reader.readBlockAt(seq, block)
  }

  /**
   * The image as it was at sequence `seq`, block by block in block order: for every block the
   * newest version at or before seq (004 cl. 10). Never-written blocks are skipped (holes).
   */
  async * imageAt (seq: number): AsyncGenerator<{ block: number, data: Buffer }> {
    this.assertOpen()
    yield * this.p.reader.imageAt(seq)
  }

  /**
   * Each block's checksum as it was at cut `seq`, in block order, from the index alone (no
   * data read); never-written blocks are skipped. What a stream's content identity hashes.
   */
  async * blockCrcsAt (seq: number): AsyncGenerator<[block: number, crc: number]> {
    this.assertOpen()
    yield * this.p.reader.blockCrcsAt(seq)
  }

  /**
   * Blocks written in (fromSeq, toSeq], in block order: what changed between two cuts (an
   * incremental send, a diff). One pass over the index of versions.
   */
  async * changedBlocks (fromSeq: number, toSeq: number): AsyncGenerator<number> {
    this.assertOpen()
    await this.p.index.checkpointThrough(toSeq)
    const ranges = await this.changedRanges(fromSeq, toSeq)
    if (ranges) {
      for (let i = 0; i < ranges.length; i += 2) for (let b = ranges[i]; b < ranges[i] + ranges[i + 1]; b++) yield b
      return
    }
    let last = -1
    for await (const [block, seq] of this.p.db.history()) {
      if (block !== last && seq > fromSeq && seq <= toSeq) {
        last = block
        yield block
      }
    }
  }

  /**
   * The blocks of changedBlocks(fromSeq, toSeq) as sorted, disjoint [first, count] pairs, from
   * the entry summaries of (fromSeq, toSeq] alone: work in proportion to what was written in
   * between, not to the volume. A version keeps its sequence number when compaction moves it,
   * and the index keeps every entry summary (freed ones too), so the write and trim entries of
   * the range name every block with a version in it. Undefined when the summaries cannot be
   * trusted for that: one is missing or is a free entry (an index rebuilt from a log whose
   * freed or recycled entries are gone), and then the caller scans the history.
   */
  private async changedRanges (fromSeq: number, toSeq: number): Promise<number[] | undefined> {
    const pairs: Array<[number, number]> = []
    let expect = fromSeq + 1
    for await (const [seq, e] of this.p.db.entries(fromSeq + 1, toSeq)) {
      if (seq !== expect || e.kind === EntryKind.free) return undefined
      expect = seq + 1
      if ((e.kind === EntryKind.write || e.kind === EntryKind.trim) && e.count > 0) pairs.push([e.block, e.count])
    }
    if (expect !== toSeq + 1 && toSeq >= fromSeq) return undefined
    pairs.sort((a, b) => a[0] - b[0])
    const out: number[] = []
    for (const [first, count] of pairs) {
      const n = out.length
      if (n > 0 && first <= out[n - 2] + out[n - 1]) out[n - 1] = Math.max(out[n - 1], first + count - out[n - 2])
      else out.push(first, count)
    }
    return out
  }

  /**
   * Blocks `blocks` (distinct whole block numbers of the volume, any order) as they were at
   * cut `seq`, block i's bytes at i * blockBytes: every block checked as readAt checks it, but
   * versions near each other in the log read with one system call (an increment's scattered
   * blocks, written one after another). A copy of a point checks pointHeld(seq) afterwards.
   */
  async readListAt (seq: number, blocks: Float64Array): Promise<Buffer> {
    this.assertOpen()
    const size = Math.max(this.sizeBytes, this.sizeAt(seq))
    const total = size / this.blockBytes
    if (blocks.some(b => !Number.isSafeInteger(b) || b < 0 || b >= total)) throw new LogdiskError('BAD_ARGUMENT', 'readListAt needs block numbers of the volume')
    return this.p.reader.readListAt(seq, blocks, size)
  }

  /**
   * Blocks [first, first+n) as they were at cut `seq`, and where each was (`where[i] === -1`:
   * never written by the cut; `zeros`: blocks known to be zeros without reading them). What whole-image copies read, a few MiB at a time, into
   * buffers they reuse (`into`). A copy of a point checks pointHeld(seq) once its reads are done.
   */
  async readBlocksAt (seq: number, first: number, n: number, into?: Buffer): Promise<BlocksRead> {
    this.assertOpen()
    // Up to the image's end at the cut (sizeAt), or the volume's now if that is further.
    const size = Math.max(this.sizeBytes, this.sizeAt(seq))
    if (!Number.isSafeInteger(first) || first < 0 || !Number.isSafeInteger(n) || n < 0 || (first + n) * this.blockBytes > size) {
      throw new LogdiskError('BAD_ARGUMENT', `bad block range ${first}+${n}`)
    }
    return this.p.reader.readBlocksAt(seq, first, n, into, size)
  }

  /**
   * Where blocks [first, first+n) were at cut `seq` and their CRC32Cs, from the block map and
   * the index (no data read): `where[i] >= 0` for a block with data, -1 never written by the
   * cut, another negative value trimmed.
   */
  async locateAt (seq: number, first: number, n: number): Promise<{ where: Float64Array, crcs: Uint32Array }> {
    this.assertOpen()
    return this.p.reader.locateAt(seq, first, n)
  }

  /**
   * The blocks that had a version (data, or a trim: where < 0) at some of the cuts `seqs`, in
   * block order, a chunk at a time, with locateAt's rows for each cut (`at[k]` for `seqs[k]`):
   * what a walk of every block with data needs (content identity), in work proportional to
   * the blocks ever written rather than to the volume, one pass for several cuts. `order`
   * `any`: the blocks in no particular order (each once), for a walk whose result does not
   * depend on it (a c2 identity is a sum): no sort and no lookup per block, several times cheaper.
   */
  async * versionsAt (seqs: number[], chunkBlocks = 8192, order: 'block' | 'any' = 'block'): AsyncGenerator<{ blocks: Float64Array | Uint32Array, at: Array<{ where: Float64Array, crcs: Uint32Array }> }> {
    this.assertOpen()
    yield * this.p.reader.versionsAt(seqs, chunkBlocks, order)
  }

  /**
   * locateAt's rows for chosen blocks (in increasing block order) at each of the cuts `seqs`
   * (`[k]` for `seqs[k]`): what changed blocks need when an identity is carried from one cut
   * to another (copy/set-identity.ts). One map lookup per block, one index walk per cut for
   * the blocks rewritten since it.
   */
  async versionsOf (seqs: number[], blocks: Float64Array): Promise<Array<{ where: Float64Array, crcs: Uint32Array }>> {
    this.assertOpen()
    for (let i = 1; i < blocks.length; i++) {
      if (!(blocks[i] > blocks[i - 1])) throw new LogdiskError('BAD_ARGUMENT', 'versionsOf needs blocks in increasing order')
    }
    return this.p.reader.locateBlocksAt(seqs, blocks, true)
  }

  /**
   * Whether the image at cut `seq` is still whole: a snapshot holds it, or it is newer than
   * the history horizon (compaction gives up only versions that points at or before the
   * horizon see). A copy made of many reads checks this after its last one: if a snapshot
   * was deleted and compacted, or the horizon rose past the point, while it ran, some read
   * may have found another point's version, and the copy must fail rather than be kept.
   */
  pointHeld (seq: number): boolean {
    this.assertOpen()
    return seq > this.p.history.horizon || this.p.snapshotTable.list().some(s => s.seq === seq)
  }

  /**
   * Bytes each snapshot alone pins (keyed by cut seq): versions that the current volume no
   * longer uses and that no other snapshot sees. Deleting the snapshot makes them
   * reclaimable by compaction. One pass over the index of versions.
   */
  async snapshotPinnedBytes (): Promise<Map<number, number>> {
    this.assertOpen()
    await this.p.index.checkpointThrough(this.p.log.seq)
    const cuts = this.p.snapshotTable.list().map(s => s.seq)
    const pinned = new Map<number, number>(cuts.map(c => [c, 0]))
    const firstCutAtOrAfter = (seq: number): number => lowerBound(cuts, seq)
    let block = -1
    let prevSeq = 0
    for await (const [b, seq] of this.p.db.history()) {
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

  /** Entry summaries (no data) with seq in [from, to], in log order: what `log` lists. */
  async * entries (from = 1, to = Number.MAX_SAFE_INTEGER): AsyncGenerator<EntryRecord & { seq: number }> {
    this.assertOpen()
    await this.p.index.checkpointThrough(this.p.log.seq)
    for await (const [seq, entry] of this.p.db.entries(from, Math.min(to, this.p.log.seq))) yield { ...entry, seq }
  }

  /**
   * The point in the log that `spec` names: a snapshot name, a sequence number (a sync
   * point's id is its sequence number), an ISO time, or a sync note (the newest such sync).
   */
  async resolvePoint (spec: string): Promise<{ seq: number, timeMs: number, what: string }> {
    this.assertOpen()
    return this.p.history.resolvePoint(spec)
  }

  // ---- Background passes: one at a time, under the maintenance lock ----

  /**
   * Compaction (001 Fig. 6; 004 cl. 9-15; F5): frees every version no one needs, cleaning
   * mostly-dead sealed segments first (compaction-pass.ts). With `snapshot`, only that
   * snapshot's partition is compacted, without cleaning. Appends go on meanwhile.
   */
  async compact (opts: CompactOptions = {}, onProgress?: (done: number, total: number) => void): Promise<CompactionReport> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(() => compactionPass(this.p, opts, onProgress))
  }

  /**
   * Merges everything up to the oldest kept snapshot (or, with none, up to now) into the
   * block-ordered baseline, then compacts: the log entries it covered are freed (000 cl. 8).
   * Every image reads the same before and after. Returns how many blocks moved in.
   */
  async compactIntoBaseline (onProgress?: (done: number, total: number) => void): Promise<{ blocks: number, cutSeq: number, trimmedSlots: number, compaction: CompactionReport }> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(async () => {
      const { blocks, cutSeq, trimmedSlots } = await mergeIntoBaseline(this.p, onProgress)
      const compaction = await compactionPass(this.p, { cleanBelow: 0 })
      return { blocks, cutSeq, trimmedSlots, compaction }
    })
  }

  /**
   * Archives sealed segments to backing storage (004 cl. 14-18; archive-pass.ts): inactive
   * ones, active ones sealed longer than `olderThanMs`, and the oldest active ones past a
   * working set of `workingSet` local segments. Appends go on meanwhile.
   */
  async archive (opts: ArchiveOptions = {}, onProgress?: (done: number, total: number) => void): Promise<ArchiveReport> {
    this.assertOpen()
    if (!this.p.opts.archive) throw new LogdiskError('BAD_ARGUMENT', `no archive target: set one with logdisk policy set ${this.dir} archive.target=/dir|s3://bucket/prefix`)
    return this.p.lifeCycle.maintenance.run(() => archivePass(this.p, opts, onProgress))
  }

  /**
   * Brings an archived segment back into the pool (Placement.bringBack), under the
   * maintenance lock like every pass. Returns the bytes brought back (0: nothing to do).
   */
  bringBackSegment (id: number): Promise<number> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(() => this.p.placement.bringBack(id))
  }

  /**
   * Moves sealed segment `id` from pool volume `from` to `to` (a pool drain, seed 002):
   * copy, fsync, switch the index, then delete the old copy. A crash at any step leaves a
   * complete copy that the index or the volume listing finds.
   */

  /**
   * Removes the segment made ahead of its roll (next-segment.ts), if any: a drain frees its
   * room that way. Returns whether there was one.
   */
  discardNextSegment (): Promise<boolean> {
    this.assertOpen()
    return this.p.log.discardNext()
  }

  /**
   * Makes every removal of this store's files on `volume` durable (fsync of its directory
   * there): a drain, before it releases the volume to spare. A removal a power loss undid
   * would bring a file of this store back on a volume another store may have taken (the
   * segment made ahead of its roll, removed without a sync, came back as the current one).
   */
  async syncVolume (volume: string, signal?: AbortSignal): Promise<void> {
    this.assertOpen()
    // First an old copy a move could not delete (relocate): a drain fails while one stays.
    await this.p.lifeCycle.maintenance.run(() => this.p.placement.removeUnnamedOn(volume), signal)
    try {
      await this.p.layer.syncDir(this.p.home.dirOf(volume))
    } catch (err) {
      if (!isLogdiskError(err, 'NOT_FOUND')) throw err // no directory: nothing of this store there
    }
  }

  relocateSegment (id: number, from: string, to: string, signal?: AbortSignal): Promise<void> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(() => this.p.placement.relocate(id, from, to), signal)
  }

  /**
   * Drops the copy of segment `id` on pool volume `from` when as many intact copies as
   * `copies` are left elsewhere (a drain after mirror was lowered); false, nothing changed,
   * when fewer are: the drain moves it instead. `gone`: the volume's directory is gone (pool
   * remove of it); the copies left must also pass their checksums.
   */
  dropSegmentCopy (id: number, from: string, copies: number, opts: { gone?: boolean } = {}, signal?: AbortSignal): Promise<boolean> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(() => this.p.placement.dropCopy(id, from, copies, opts), signal)
  }

  /**
   * Restores lost copies (F10): for every segment whose copies are fewer than `copies` or
   * missing from a volume the index names, copies a surviving one onto `place`'s choice.
   * Returns how many copies were made.
   */
  repairCopies (copies: number, place: (id: number, exclude: string[]) => Promise<string>): Promise<{ made: number, staleLeft: string[], healed: number, damaged: number[], unplaced: number[], forgotten: number }> {
    this.assertOpen()
    return this.p.lifeCycle.maintenance.run(() => this.p.placement.repair(copies, place))
  }

  /**
   * Reads every entry of the log, checks every CRC and that the index agrees with the log.
   * `copies`: how many copies each local segment should have (the pool's mirror policy);
   * fewer is reported as degraded.
   */
  verify (opts: { copies?: number, onProgress?: (doneBytes: number, totalBytes: number) => void, signal?: AbortSignal } = {}): Promise<VerifyReport> {
    this.assertOpen()
    // A pass (compaction punching, a drain moving files) would show up as damage mid-read.
    // `signal`: a verify interrupted while it still waits for a pass to end stops at once.
    return this.p.lifeCycle.maintenance.run(() => this.verifyLocked(opts.copies ?? 1, opts.onProgress), opts.signal)
  }

  private async verifyLocked (copies: number, onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<VerifyReport> {
    const { log, index, segments, layer, home, geometry } = this.p
    // Only what is complete: an append in flight past `end` is not a torn entry.
    const end = await log.lock.run(async () => {
      await log.syncAll()
      return log.completedPosition
    })
    await index.checkpointThrough(log.seq)
    await index.commitStaged() // index changes that wait for a retry (a failed commit) go in first
    await this.p.map.loaded() // verify compares the map with the index: all of it
    let archivedIds: Promise<Set<number>> | undefined // what backing storage holds, listed once
    return verifyStore({
      layer,
      home,
      segmentVolumes: segments.placement(),
      open: id => segments.stateOf(id) === 'archived'
        ? this.p.reader.fetchArchived(id)
        : Segment.open(layer, home, segments.volumesOf(id) ?? [], id, geometry),
      geometry,
      segmentIds: [...segments.ids],
      copies,
      // The checkpoint may cover entries appended after `end` (writes go on while verify runs):
      // compared up to `end` only, or their index rows read as missing from the log (a
      // hostile test, helper-58: verify on a mounted store being written reported corruption).
      upTo: { ...index.last, position: Math.min(index.last.position, end) },
      end,
      map: this.p.map,
      index: this.p.db,
      baseline: await this.p.reader.baselineForVerify(),
      promised: { horizon: this.p.history.horizon, cuts: this.p.snapshotTable.list().map(s => s.seq).sort((a, b) => a - b) },
      archived: {
        is: id => segments.isArchived(id),
        held: async id => {
          const link = this.p.opts.archive
          if (!link) return false
          archivedIds ??= link.list().then(ids => new Set(ids))
          return (await archivedIds).has(id)
        }
      },
      onProgress
    })
  }

  /**
   * Changes the volume's size (logdisk resize). Growing is O(1): the new blocks read as zeros.
   * Shrinking is refused (BAD_ARGUMENT, nothing changed) while any version of a block past the
   * new end holds data: in the current volume, a snapshot or the history (discarded and
   * compacted, it holds none); on a clone also while a block there reads its parent's data.
   * Persists store.json. `opts.grow`: `sizeBytes` is added to the size the store has once
   * the resize holds the append lock (two grows at once both count). `opts.ready`, called
   * under the append lock with the sizes just before the size changes, may refuse by throwing
   * (the daemon's check for open images, a client that went away). Refused (BUSY) while a
   * holdSize holder refuses it (a receive, a criteria copy).
   */
  async resize (sizeBytes: number, opts: { grow?: boolean, ready?: (fromBytes: number, toBytes: number) => void } = {}): Promise<{ fromBytes: number, toBytes: number }> {
    this.assertOpen()
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % this.blockBytes !== 0) {
      throw new LogdiskError('BAD_ARGUMENT', `size ${exactSize(sizeBytes)} must be a positive multiple of the block size (${formatBytes(this.blockBytes)})`)
    }
    const { log, index } = this.p
    return this.p.lifeCycle.maintenance.run(async () => {
      // Resolved under the maintenance lock, which every resize holds: a relative size
      // computed before it counted two grows at once as one (helper-86 D3).
      const fromBytes = this.config.sizeBytes
      const to = opts.grow === true ? fromBytes + sizeBytes : sizeBytes
      if (!Number.isSafeInteger(to)) throw new LogdiskError('BAD_ARGUMENT', `size ${exactSize(to)} is too large`)
      const first = to / this.blockBytes
      const shrinks = to < fromBytes
      if (shrinks) await index.checkpointThrough(log.seq) // every version is in LevelDB
      return log.lock.run(async () => {
        if (shrinks) {
          // Again under the lock (a checkpoint never takes it): versions appended between the
          // one above and the lock (a write, a snapshot of it, a trim of it) were in no
          // history the check reads, so the snapshot's block went past the end unseen
          // (resize-write-race.test.ts).
          await index.checkpointThrough(log.seq)
          await this.p.map.loaded()
          // A trimmed version reads as zeros, as a block past the end of a grown volume does:
          // blocks that hold nothing else may go (their trims stay in the index and the log,
          // so that a rebuild never brings back what they hid).
          let past: number | undefined
          this.p.map.forEach((block, position) => { if (block >= first && position !== TRIMMED && (past === undefined || block < past)) past = block })
          if (past === undefined) {
            for await (const [block, , position] of this.p.db.history(first)) {
              if (position !== TRIMMED) { past = block; break }
            }
          }
          past ??= await this.readsParentPast(first, fromBytes / this.blockBytes)
          if (past !== undefined) {
            throw new LogdiskError('BAD_ARGUMENT', `cannot shrink ${this.dir} to ${exactSize(to)}: block ${past} (byte ${past * this.blockBytes}) past the new end was written (in the current volume, a snapshot or the history${this.p.opts.fallThroughHolds ? ', or in the parent\'s snapshot this clone reads' : ''}); shrink the filesystem and keep the data below the new end, or keep the size`)
          }
        }
        const checkHolders = (): void => {
          if (to === fromBytes) return
          const holder = this.sizeHolders.find(h => shrinks || !h.shrinkOnly)
          if (holder) throw new LogdiskError('BUSY', `cannot resize ${this.dir} while ${holder.what}; try again when it ends; nothing was changed`)
        }
        checkHolders()
        opts.ready?.(fromBytes, to)
        if (to !== fromBytes) {
          // Logged first, under the append lock: points before it had the old size (sizeAt),
          // which their images (restore --at) keep. A sync marker, which releases before it
          // read as a sync point. Should store.json not follow (a crash, or a holder that came
          // meanwhile), the marker says no more than that the size at the points after it is
          // the current one, which it is.
          const resize = { fromBytes, toBytes: to }
          await log.appendMarkerLocked(EntryKind.sync, { note: `resize ${fromBytes} -> ${to}`, frozen: false, resize })
          checkHolders() // again, in the same synchronous step as store.json
          opts.ready?.(fromBytes, to)
        }
        this.config.sizeBytes = to
        writeConfig(this.dir, this.config)
        this.p.map.setVolumeBlocks(first)
        return { fromBytes, toBytes: to }
      })
    })
  }

  /**
   * On a clone: the first block of [first, end) that some image still reads from the parent's
   * snapshot (the parent holds data there, and the clone had no version of the block at its
   * oldest snapshot or restorable point), from the parent's map and this store's, no data read.
   */
  private async readsParentPast (first: number, end: number): Promise<number | undefined> {
    const holds = this.p.opts.fallThroughHolds
    if (!holds) return undefined
    // The oldest point kept: past the horizon and inside history.keep (a point older than the
    // window is given up at the next compaction; with history.keep=0 only the newest is kept,
    // so a resize's own sync point does not hold the parent's blocks for good).
    const window = await this.p.history.windowStart({ seq: this.p.log.seq } as unknown as PassFence)
    const kept = Math.max(this.p.history.horizon + 1, window)
    const oldest = Math.min(kept, this.p.log.seq, ...this.p.snapshotTable.list().map(s => s.seq))
    for await (const blocks of holds(first, end)) {
      const [{ where }] = await this.p.reader.locateBlocksAt([oldest], blocks, true)
      for (let i = 0; i < blocks.length; i++) if (where[i] === -1) return blocks[i]
    }
    return undefined
  }

  /**
   * Holds the volume's size while `what` runs (a receive applying a stream, a copy of a
   * snapshot's range): a resize meanwhile is refused (BUSY), only a shrink with `shrinkOnly`.
   * Returns the release.
   */
  holdSize (what: string, shrinkOnly = false): () => void {
    const h = { what, shrinkOnly }
    this.sizeHolders.push(h)
    return () => { const i = this.sizeHolders.indexOf(h); if (i >= 0) this.sizeHolders.splice(i, 1) }
  }

  private readonly sizeHolders: Array<{ what: string, shrinkOnly: boolean }> = []

  // ---- What replication and clones read (src/replicate, src/clone) ----

  /** Whether block `block` has a version in this store (written or trimmed): a clone's promote copies the others. */
  hasVersion (block: number): boolean {
    this.assertOpen()
    return this.p.map.position(block) !== -1
  }

  /** Whether backing storage holds segment `id` whole (archived): a lost local copy reads from there. */
  isSegmentArchived (id: number): boolean {
    return this.p.segments.isArchived(id)
  }

  /**
   * Whether segment `id` is the current one and holds no entry yet: a store no command has
   * written to has one only in memory (a read-only open makes no file), which holds nothing
   * a read could miss.
   */
  isEmptyCurrent (id: number): boolean {
    const { log } = this.p
    return id === log.current.id && log.current.tail <= SEGMENT_HEADER_BYTES
  }

  /**
   * The segments of the log, oldest first, with their states (recycled ones are gone): what
   * replication ships.
   */
  logSegments (): Array<{ id: number, state: SegmentRecord['state'] }> {
    this.assertOpen()
    return this.p.segments.ids.map(id => ({ id, state: this.p.segments.stateOf(id) ?? 'active' }))
  }

  /**
   * Raw bytes of segment `id` from byte `offset`: at most `length`, fewer at the end of the
   * file (an archived segment is fetched back first). For replication, which ships the log as
   * it is: callers read only sealed segments and durable bytes of the current one, and the
   * read runs in a read epoch, so a pass never deletes the file under it.
   */
  readLog (id: number, offset: number, length: number): Promise<Buffer> {
    this.assertOpen()
    return this.p.reads.guard(async () => {
      const link = this.p.opts.archive
      if (keepsHistory(link) && this.p.segments.isArchived(id) && this.p.segments.stateOf(id) !== 'current') {
        // With backing storage that keeps history, compaction punches the versions it frees
        // out of the local file once the whole segment is archived: reads of them go to the
        // archive. Shipped as it is here, the replica got the punched file and its stores
        // lost those versions (restore --at gave older bytes without a word: a hostile
        // test, helper-52). The archive's copy is the log as it was written.
        const whole = await link!.get(id)
        return Buffer.from(whole.subarray(Math.min(offset, whole.length), Math.min(offset + length, whole.length)))
      }
      const segment = await this.p.reader.segment(id)
      const size = await segment.handle.size()
      const n = Math.max(0, Math.min(length, size - offset))
      const out = Buffer.allocUnsafe(n)
      return out.subarray(0, await readUpTo(segment.handle, out, offset))
    })
  }

  /**
   * Every row of the index from one consistent view, with the checkpoint it covers: what
   * replication ships as an index checkpoint (a cache of the log up to `checkpoint`). With a
   * baseline, its rows point back at the log, where the versions were when they were merged
   * (portable-index.ts; NOT_FOUND from the iteration when that is not known).
   */
  indexRows (): AsyncGenerator<[Buffer, Buffer]> {
    this.assertOpen()
    if (!fs.existsSync(baselineFiles(this.dir).index)) return this.p.db.dump()
    return portableRows(this.p.db.dump(), () => readBaselineOrigins(this.p.layer, this.dir, this.config.uuid))
  }

  // ---- Placement and status ----

  /** The volumes a segment's copies should be on. */
  volumesOf (id: number): string[] | undefined {
    return this.p.segments.volumesOf(id)
  }

  /** Segment ids with the volumes their copies should be on (pool list, repair). */
  segmentPlacement (): Map<number, string[]> {
    return this.p.segments.placement()
  }

  /**
   * A copy of a mirrored segment failed a write and was dropped: it no longer holds what the
   * others hold (segment-table.ts records it before the next flush returns).
   */
  copyDropped (id: number, volume: string): void {
    this.p.segments.copyDropped(id, volume)
  }

  /** Disk bytes (allocated, after hole punching) of the store's segments, by state. */
  async spaceByState (): Promise<Record<string, number>> {
    const { segments } = this.p
    const out: Record<string, number> = { current: 0, active: 0, inactive: 0, archived: 0, baseline: 0 }
    try {
      out.baseline = fs.statSync(baselineFiles(this.dir).image).blocks * 512
    } catch { /* no baseline */ }
    for (const id of segments.ids) {
      for (const volume of segments.volumesOf(id) ?? []) {
        try {
          const st = fs.statSync(path.join(this.home.dirOf(volume), segmentFileName(id)))
          out[segments.stateOf(id) ?? 'active'] += st.blocks * 512
        } catch { /* missing copy: verify reports it */ }
      }
    }
    return out
  }

  status (): StoreStatus {
    const { log, index, segments, map } = this.p
    let logBytes = 0
    for (const id of segments.ids) logBytes += id === log.current.id ? log.current.tail : this.config.segmentBytes
    return {
      dir: this.dir,
      sizeBytes: this.sizeBytes,
      blockBytes: this.blockBytes,
      segmentBytes: this.config.segmentBytes,
      writtenBytes: (map.count - map.trimmed) * this.blockBytes,
      logBytes,
      segments: segments.countByState(),
      index: {
        seq: log.seq,
        position: log.completedPosition,
        checkpointSeq: index.last.seq,
        checkpointPosition: index.last.position,
        pendingBlocks: index.pendingBlocks
      },
      mapMemoryBytes: map.memoryBytes,
      recovery: this.recovery,
      history: { horizonSeq: this.p.history.horizon, keepMs: this.historyKeepMs },
      ...(this.writebackFailed ? { writebackFailed: true } : {})
    }
  }

  // ---- Closing ----

  /** Flushes, checkpoints and releases the store (and its lock). */
  async close (): Promise<void> {
    if (this.state.closed) return
    const { log, index, lifeCycle } = this.p
    index.stopTimer()
    this.state.closing = true // a pass in flight stops at its next step (each step is crash-safe)
    await lifeCycle.maintenance.idle().catch(() => undefined) // a pass in flight ends first
    await log.lock.idle()
    await log.discardNext()
    // Bytes a failed append left past the tail would be read as entries by the next open.
    let clean = true
    await log.lock.run(() => log.cutStale()).catch(err => {
      clean = false // the next open may read them as entries: no clean close is recorded
      this.p.logger.error({ err: (err as Error).message }, 'closing with bytes of a failed append past the log tail')
    })
    await log.flushesDone()
    try {
      await log.syncAll()
    } catch (err) {
      if (!log.writebackFailed) throw err
      // Nothing can be made durable in this process any more (Segment.sync), and a close
      // that failed would keep the store locked: release it as a kill -9 would, so that the
      // remount the error asks for can happen. That open writes what no flush covered again.
      this.p.logger.error({ err: (err as Error).message }, 'closed without a final sync: a write-back of the log failed; the next open writes the entries no flush covered again')
      return await this.abandon()
    }
    // LOGDISK_FAULTS=close-fails (tests): the close fails writing the index, as on a full filesystem.
    if (this.p.opts.faults?.has('close-fails')) throw new LogdiskError('IO', 'injected fault: writing the index at close failed (LOGDISK_FAULTS=close-fails)')
    await index.checkpointThrough(log.seq)
    if (!this.p.opts.readOnly && this.p.opts.savedBlockMap !== false) await this.saveBlockMap()
    if (!this.p.opts.readOnly && clean) await this.recordCleanClose()
    this.state.closed = true
    await this.release()
  }

  /**
   * Saves the block map for the next open (block-map-file.ts), once every change is in the
   * index and synced, stamped with the checkpoint that covers them. Never fails the close:
   * without the file the next open reads the index history, as it always could.
   */
  private async saveBlockMap (): Promise<void> {
    const { log, index, db, layer, map, logger, config } = this.p
    try {
      await index.checkpoint() // changes with no entry of their own (segment records) go in too
      if (index.batch.size > 0 || index.inFlight() !== undefined) return
      await db.sync() // the checkpoint the file names is durable before the file
      const checkpoint = await db.checkpoint()
      if (!checkpoint || checkpoint.seq !== log.seq) return
      await saveBlockMap(layer, path.join(this.dir, INDEX_DIR), map, config, checkpoint)
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not save the block map; the next open reads the index history instead')
    }
  }

  /**
   * Records where the log ends now that the index holds all of it (keys.ts 'l'): entries
   * the next open finds past it in a pool volume directory another store directory claimed
   * meanwhile are a copy's, never taken for this store's own (recovery.ts: reads stop there,
   * writes are refused). Never fails the close: without the record the next open replays
   * what it finds, as it always did.
   */
  private async recordCleanClose (): Promise<void> {
    const { log, index, db, logger } = this.p
    try {
      await index.checkpoint() // changes with no entry of their own go in too
      if (index.batch.size > 0 || index.inFlight() !== undefined) return
      const checkpoint = await db.checkpoint()
      if (!checkpoint || checkpoint.seq !== log.seq) return
      await db.putCleanClose({ seq: checkpoint.seq, position: checkpoint.position })
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not record the clean close; the next open replays whatever follows the log\'s end')
    }
  }

  /**
   * For crash tests: drops everything not yet checkpointed, as a kill -9 would, and releases
   * the lock so the store can be opened again in the same process.
   */
  async abandon (): Promise<void> {
    if (this.state.closed) return
    this.p.index.stopTimer()
    this.state.closed = true
    await this.p.log.lock.idle().catch(() => undefined)
    await this.p.log.dropNext()
    await this.p.log.flushesDone()
    await this.p.index.inFlight()?.catch(() => undefined)
    await this.release()
  }

  private async release (): Promise<void> {
    await this.p.map.releaseDeferred() // a deferred table no command needed: its file closes
    await this.p.reader.closeAll()
    await this.p.db.close()
    if (!this.p.opts.readOnly) removeHolder(this.dir)
  }
}
