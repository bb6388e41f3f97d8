import { LogdiskError } from '../errors'
import type { BlockMap } from './block-map'
import type { StoreConfig } from './config'
import type { FileHandle, FileLayer } from './file-layer'
import type { TrimRun } from './entry'
import type { EntryKind } from './format'
import type { Checkpoint, EntryRecord, IndexBatch, IndexDb, SegmentRecord } from './index-db'
import type { Logger } from './logger'
import type { Mutex } from './mutex'
import type { OpenOptions } from './open-options'
import type { PassFence } from './pass-fence'
import type { ReadEpochs } from './read-epochs'
import type { Segment, SegmentGeometry } from './segment'
import type { SegmentHome } from './segment-home'
import type { SnapshotTable } from './snapshots'
import type { VerifyInput } from './verify'

/**
 * What every part of an open store shares: the store's fixed facts (directory, geometry,
 * disk, index, logger, options, clock) and the other parts. The Store facade (store.ts)
 * builds one of these and hands it to each part; a part reaches another only through it, so
 * who uses whom is visible here:
 *
 * Each part is used only through its interface below (the class implementing it is named
 * beside it), so a part can be read, tested and replaced on its own:
 *
 *   log       LogAppender   (log-appender.ts)   appends entries, rolls segments, syncs in order
 *   index     IndexWriter   (index-writer.ts)   the batch of index changes and its checkpoints
 *   map       BlockMap      (block-map.ts)      every block's newest copy, in memory
 *   segments  SegmentTable  (segment-table.ts)  each segment's state, copies and archived flag
 *   reader    Reader        (reader.ts)         a block's bytes at a cut: log, mirror, baseline, archive
 *   history   History       (history.ts)        the history window, horizon, points in time
 *   lifeCycle LifeCycle     (life-cycle.ts)     the passes' lock and fence, and what they share
 *   placement Placement     (placement.ts)      where segment copies live: relocation, repair
 */
export interface StoreParts {
  readonly dir: string
  readonly config: StoreConfig
  readonly geometry: SegmentGeometry
  readonly layer: FileLayer
  readonly home: SegmentHome
  readonly db: IndexDb
  readonly map: BlockMap
  readonly snapshotTable: SnapshotTable
  readonly logger: Logger
  readonly opts: OpenOptions
  /** Reads in flight, so that a pass never punches or deletes bytes a read is about to use. */
  readonly reads: ReadEpochs
  readonly state: StoreState
  log: LogPart
  index: IndexPart
  segments: SegmentsPart
  reader: ReaderPart
  history: HistoryPart
  lifeCycle: LifeCyclePart
  placement: PlacementPart
  /** The store's clock, milliseconds since the epoch (virtual in the simulation). */
  now: () => number
}

/** The log's write side (log-appender.ts). Appends run under `lock`, one at a time. */
export interface LogPart {
  /** The append lock; passes take it to read a consistent tail. */
  readonly lock: Mutex
  /** Writevs done inline (IoOptions.inline), all told. */
  readonly inlineWrites: number
  /** An fdatasync of the log failed: every flush fails until the store is opened again. */
  readonly writebackFailed: boolean
  /** The segment being appended to. */
  readonly current: Segment
  /** Sequence number of the last entry. */
  readonly seq: number
  /** Log position just past the last completed append. */
  readonly completedPosition: number
  /**
   * Writes `data` at byte `offset` (checked by the caller); takes the lock. Whole-block writes
   * queued together are appended by one group commit (one writev).
   */
  write (offset: number, data: Buffer, blockCrcs?: Uint32Array, opts?: IoOptions): Promise<void>
  /** Writes `data` at byte `offset` (checked by the caller); under the lock. */
  writeLocked (offset: number, data: Buffer): Promise<void>
  /** Trims `length` bytes at `offset` (checked by the caller); under the lock. */
  discardLocked (offset: number, length: number): Promise<void>
  /** Appends a marker (sync point, snapshot, history), durable when it resolves; under the lock. */
  appendMarkerLocked (kind: EntryKind, payload: Record<string, unknown>): Promise<EntryRecord & { seq: number }>
  /** Appends a move entry of these versions (their bytes in `data`); takes the lock. */
  appendMove (versions: Array<{ block: number, seq: number, crc: number }>, data: Buffer): Promise<void>
  appendTrimMove (runs: TrimRun[]): Promise<void>
  /** Makes segment `id` sealed and durable (rolls if it is the current one); takes the lock. */
  seal (id: number): Promise<void>
  /** Removes the segment made ahead of its roll if its id is `id` (any when undefined); whether there was one. */
  discardNext (id?: number): Promise<boolean>
  /** Closes the handle of the segment made ahead and leaves its file (abandon). */
  dropNext (): Promise<void>
  /** The `durableSeq` an entry written now records (an older store first becomes the current format). */
  entryDurableSeq (): number
  /** Every write resolved before it durable; concurrent flushes share one sync; no lock. */
  flush (): Promise<void>
  /** Settles once the flushes called so far are done. */
  flushesDone (): Promise<void>
  /** fdatasync of every sealed segment not yet synced, oldest first, up to the one current when called (under the append lock: all of them). */
  syncAll (): Promise<void>
  /** Cuts bytes a failed append left past the tail, if a cut failed then; under the lock. */
  cutStale (): Promise<void>
}

/** The write side of the index (index-writer.ts): the batch and its checkpoints. */
export interface IndexPart {
  /** Changes not yet in LevelDB; writers add to it in the same step as their append. */
  readonly batch: IndexBatch
  /** Settles once writers may go on (a bound on the batch); undefined: at once. */
  backpressure (): Promise<void> | undefined
  /** What the last successful checkpoint covered. */
  readonly last: Checkpoint
  readonly pendingBlocks: number
  /** Syncs the log, then commits the batch with the log position it covers. */
  checkpoint (): Promise<void>
  /** Checkpoints until the index covers `seq`. */
  checkpointThrough (seq: number): Promise<void>
  /** Commits every change staged so far, also those no log entry follows (a pass judging from LevelDB). */
  commitStaged (): Promise<void>
  /** Checkpoints and syncs LevelDB's log: before a file is deleted or overwritten. */
  commitDurably (): Promise<void>
  /** Checkpoints in the background once enough block versions wait. */
  checkpointIfFull (): void
  /** The checkpoint in flight, if any. */
  inFlight (): Promise<void> | undefined
  stopTimer (): void
}

/** Each segment's state, copies and archived flag (segment-table.ts); the one writer of segment records. */
export interface SegmentsPart {
  /** Ids in log order: sealed ones, then the current one. */
  ids: number[]
  recycledCount: number
  stateOf (id: number): SegmentRecord['state'] | undefined
  setState (id: number, state: SegmentRecord['state']): void
  forgetState (id: number): void
  /** The volumes a segment's copies should be on; undefined once it has no local copy. */
  volumesOf (id: number): string[] | undefined
  hasLocal (id: number): boolean
  setVolumes (id: number, volumes: string[]): void
  forgetVolumes (id: number): void
  placement (): Map<number, string[]>
  isArchived (id: number): boolean
  markArchived (id: number): void
  /** Compaction freed entries of it whose bytes are not punched yet (SegmentRecord.unpunched). */
  isUnpunched (id: number): boolean
  /** Changes it, and puts the record into the next index batch if it changed. */
  recordUnpunched (id: number, unpunched: boolean): void
  /** Puts the segment's whole record into the next index batch. */
  record (id: number): void
  /** The segment's whole record as the in-memory state has it now. */
  recordOf (id: number): SegmentRecord
  /** A mirror copy fell behind: drop it, recorded before the next flush returns. */
  copyDropped (id: number, volume: string): void
  dropHandler (id: number): (volume: string) => void
  /** Makes the records of dropped copies durable (part of every sync). */
  recordDrops (): Promise<void>
  countByState (): Record<'current' | 'active' | 'inactive' | 'archived' | 'recycled', number>
}

/**
 * Blocks read for a whole-image copy: the bytes, where each block was at the cut (-1: never
 * written by then, TRIMMED: trimmed), and which of them the reader filled with zeros without
 * reading anything (`zeros[i] === 1`: never written and no parent to fall through to, or
 * trimmed), so that a copy need not look at those bytes to know they are zeros; `crcs`: the
 * CRC32C each block read from the log or the baseline (where >= 0) was checked against.
 */
export interface BlocksRead {
  data: Buffer
  where: Float64Array
  zeros: Uint8Array
  crcs: Uint32Array
}

/** How a foreground read or write may be served. */
export interface IoOptions {
  /**
   * The caller has nothing else to do until this read or write is done (a FUSE server with no
   * other request in flight): a local read of up to 128 KiB, or a write's one writev of up to
   * 1 MiB, is a synchronous system call on the calling thread instead of a trip through the
   * thread pool (two thread hand-offs). Measured at depth 1 on 4 KiB random reads: 1.4-1.6x the
   * IOPS from disk, 1.2-1.4x from the page cache. At depth 16 it would serialize reads that
   * miss the page cache (0.6x measured), which is why it is the caller's choice.
   */
  inline?: boolean
}

/** The read side (reader.ts): a block's bytes as of a cut, CRC-checked. */
export interface ReaderPart {
  /** Reads done inline (IoOptions.inline), all told. */
  readonly inlineReads: number
  /** Reads served at once from the page cache with other requests in flight (FileHandle.readCached). */
  readonly cachedReads: number
  /** Segments read whole into the page cache because image reads kept missing in them (segment-warmer.ts). */
  readonly warmedSegments: number
  /** Reads the current volume (a read epoch of its own). */
  readCurrent (offset: number, length: number, into?: Buffer, opts?: IoOptions): Promise<Buffer>
  /** Reads the image as it was at cut `seq`. */
  readAt (seq: number, offset: number, length: number, into?: Buffer, opts?: IoOptions, sizeBytes?: number): Promise<Buffer>
  /**
   * Reads `run` blocks stored contiguously from log position `pos`, checking each CRC; into
   * `into` (run blocks long) when given, unless the bytes had to come from elsewhere (another
   * mirror copy, backing storage): the buffer returned holds them either way.
   */
  readRun (block: number, run: number, pos: number, crcs: Uint32Array, into?: Buffer): Promise<Buffer>
  readBlockAt (seq: number, block: number): Promise<Buffer>
  imageAt (seq: number): AsyncGenerator<{ block: number, data: Buffer }>
  readBlocksAt (seq: number, first: number, n: number, into?: Buffer, sizeBytes?: number): Promise<BlocksRead>
  /** Chosen blocks as they were at cut `seq`, versions near each other in the log read together. */
  readListAt (seq: number, blocks: Float64Array, sizeBytes?: number): Promise<Buffer>
  /** Where blocks [first, first+n) were at cut `seq` (where < 0: zeros) and their CRCs; no data read. */
  locateAt (seq: number, first: number, n: number): Promise<{ where: Float64Array, crcs: Uint32Array }>
  /** locateAt's rows for chosen blocks at each of the cuts (`walk`: blocks in increasing order, one index iterator). */
  locateBlocksAt (seqs: number[], blocks: Float64Array | Uint32Array, walk: boolean): Promise<Array<{ where: Float64Array, crcs: Uint32Array }>>
  /** The blocks with a version at some of the cuts, in block order (or, `any`, the map's), in chunks, with locateAt's rows for each cut. */
  versionsAt (seqs: number[], chunkBlocks: number, order?: 'block' | 'any'): AsyncGenerator<{ blocks: Float64Array | Uint32Array, at: Array<{ where: Float64Array, crcs: Uint32Array }> }>
  blockCrcsAt (seq: number): AsyncGenerator<[block: number, crc: number]>
  baselineHandle (): Promise<FileHandle>
  baselineForVerify (): Promise<VerifyInput['baseline']>
  /** An open handle of a segment: local copies, or fetched back from backing storage. */
  segment (id: number): Promise<Segment>
  fetchArchived (id: number): Promise<Segment>
  /** Keeps a segment the log just created among the open handles. */
  adoptOpen (segment: Segment): void
  /** Closes a segment's handle once the reads in flight are done. */
  forgetHandle (id: number): void
  closeAll (): Promise<void>
}

/** The history window, the horizon and points in time (history.ts). */
export interface HistoryPart {
  /** Points at or before this sequence may have lost versions. */
  readonly horizon: number
  readonly keepMs: number
  setKeepMs (ms: number): void
  /** The first point the history window protects. */
  windowStart (fence: PassFence): Promise<number>
  /** A history marker goes into the log before any point at or before `horizon` is given up. */
  raiseHorizon (horizon: number): Promise<void>
  resolvePoint (spec: string): Promise<{ seq: number, timeMs: number, what: string }>
}

/** What the passes share (life-cycle.ts); the passes themselves are *-pass.ts. */
export interface LifeCyclePart {
  /** Passes run one at a time under this lock. */
  readonly maintenance: Mutex
  /** The fence of a pass (pass-fence.ts), with the index checkpointed through it. */
  takeFence (): Promise<PassFence>
  /** Marks sealed segments holding no block's newest version inactive; returns how many. */
  markInactive (fence: PassFence): number
  /** Puts a segment on backing storage unless it is there; returns the bytes put. */
  ensureArchived (id: number): Promise<number>
  /** Deletes every local copy of a segment, once the reads in flight are done. */
  removeEveryCopy (id: number): Promise<void>
  /** Removes a file once the reads in flight are done. */
  removeAfterReads (file: string): Promise<void>
}

/** Where segment copies live (placement.ts); each call runs under the maintenance lock. */
export interface PlacementPart {
  relocate (id: number, from: string, to: string): Promise<void>
  dropCopy (id: number, from: string, copies: number, opts?: { gone?: boolean }): Promise<boolean>
  repair (copies: number, place: (id: number, exclude: string[]) => Promise<string>): Promise<{ made: number, staleLeft: string[], healed: number, damaged: number[], unplaced: number[], forgotten: number }>
  bringBack (id: number): Promise<number>
  removeUnnamedOn (volume: string): Promise<void>
}

/** Whether the store is closing (passes stop at their next step) or closed (calls refused). */
export class StoreState {
  /** Set by close(): background passes stop at their next step instead of finishing. */
  closing = false
  closed = false

  constructor (private readonly dir: string) {}

  /** Where a pass may stop early: everything before is as consistent as after a crash. */
  assertNotClosing (): void {
    if (this.closing) throw new LogdiskError('CLOSED', `store ${this.dir} is closing; the background pass stopped early`)
  }

  assertOpen (): void {
    if (this.closed) throw new LogdiskError('CLOSED', `store ${this.dir} is closed`)
  }
}

/** A log position: segment id times segment size plus the offset in the segment file. */
export function positionOf (config: StoreConfig, segmentId: number, offset: number): number {
  return segmentId * config.segmentBytes + offset
}

/** The segment a log position falls in. */
export function segmentOf (config: StoreConfig, position: number): number {
  return Math.floor(position / config.segmentBytes)
}
