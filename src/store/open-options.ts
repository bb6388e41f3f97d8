import type { ArchiveLink } from './archive-link'
import type { FileLayer } from './file-layer'
import type { IndexDb } from './index-db'
import type { Logger } from './logger'
import type { SegmentHome } from './segment-home'

export interface OpenOptions {
  /** The disk the segments live on; tests pass a simulated one. */
  fileLayer?: FileLayer
  logger?: Logger
  /** How often completed appends are checkpointed into the LevelDB index. */
  checkpointIntervalMs?: number
  /** Checkpoint early once this many block versions wait for the index. */
  checkpointMaxBlocks?: number
  /** Operations per LevelDB write of one checkpoint (default 1024); the simulation makes it small. */
  indexCommitChunkOps?: number
  /**
   * Bytes per writev of a group commit (default and most: WRITEV_MAX_BYTES, format.ts); the
   * simulation makes it small so that its small writes run several writevs of a group at once.
   */
  writevMaxBytes?: number
  /**
   * Dead versions a compaction holds at once (default COMPACTION_DEAD_BATCH, compaction-pass.ts):
   * past that it stages and commits their removal from the index a batch at a time. The
   * simulation makes it small.
   */
  compactionDeadBatch?: number
  /**
   * Versions of one chunk of 64 blocks the walks of the whole history hold at once (default
   * HOLD_CHUNK_VERSIONS, index-db.ts): a chunk with more is read again by groups of blocks.
   * The simulation makes it small.
   */
  historyHoldVersions?: number
  /**
   * Called by compaction between its big steps (after each walk of the whole history, after
   * each batch of freed versions, at its end): the host may collect garbage there. The walks
   * and index commits of one pass after fast writes leave tens of MiB of short-lived buffers
   * that V8 only collects when it sees fit. The store itself never forces a collection; the
   * daemon does (src/daemon/heap-trim.ts).
   */
  reclaimMemory?: () => void
  /** Segment handles kept open for reads (default 64); the simulation makes it small so handles are evicted under reads. */
  maxOpenSegments?: number
  /**
   * Memory a warm always leaves free (segment-warmer.ts; default an eighth of the machine's).
   * Tests set 0, so that a busy machine whose memory is full of cache still warms.
   */
  warmReserveBytes?: number
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
  /**
   * Save the block map at a clean close and load it at the next open (block-map-file.ts);
   * default true. The simulation turns it off to replay seeds found before it as they were.
   */
  savedBlockMap?: boolean
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
   * Entries past where the log ended at the last clean close, in a pool volume directory
   * another store directory claimed since, are a copy's (same identity: recovery.ts), and the
   * open is refused. With this, the log ends there instead: they are cut and set aside into
   * lost+found/ as a torn tail is (`logdisk pool repair --drop-copy-writes`).
   */
  dropCopyWrites?: boolean
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
  /**
   * Clones: the blocks of [first, end) the parent's snapshot holds data in (not never written,
   * trimmed or past its end), in increasing order, a chunk at a time, from its map (no data
   * read). A shrink is refused while a block past the new end still reads the parent's data.
   */
  fallThroughHolds?: (first: number, end: number) => AsyncIterable<Float64Array>
}

/** history.keep by default: every point of the last day stays restorable (NILFS2's protection period). */
export const DEFAULT_HISTORY_KEEP_MS = 24 * 3600 * 1000
