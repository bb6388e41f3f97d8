import { LogdiskError } from '../errors'
import type { BlockMap } from './block-map'
import type { StoreConfig } from './config'
import type { FileLayer } from './file-layer'
import type { IndexDb } from './index-db'
import type { IndexWriter } from './index-writer'
import type { LifeCycle } from './life-cycle'
import type { LogAppender } from './log-appender'
import type { Logger } from './logger'
import type { OpenOptions } from './open-options'
import type { Placement } from './placement'
import type { ReadEpochs } from './read-epochs'
import type { Reader } from './reader'
import type { History } from './history'
import type { SegmentGeometry } from './segment'
import type { SegmentHome } from './segment-home'
import type { SegmentTable } from './segment-table'
import type { SnapshotTable } from './snapshots'

/**
 * What every part of an open store shares: the store's fixed facts (directory, geometry,
 * disk, index, logger, options, clock) and the other parts. The Store facade (store.ts)
 * builds one of these and hands it to each part; a part reaches another only through it, so
 * who uses whom is visible here:
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
  log: LogAppender
  index: IndexWriter
  segments: SegmentTable
  reader: Reader
  history: History
  lifeCycle: LifeCycle
  placement: Placement
  /** The store's clock, milliseconds since the epoch (virtual in the simulation). */
  now: () => number
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
