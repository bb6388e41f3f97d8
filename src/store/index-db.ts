import { ClassicLevel } from 'classic-level'
import { pack, unpack } from 'msgpackr'
import { LogdiskError } from '../errors'
import { BlockMap } from './block-map'
import { CHECKPOINT_KEY, HISTORY_PREFIX, SEGMENT_PREFIX, MARKER_PREFIX, decodeHistory, historyKey, historyValue, numberKey, prefixRange, readU64BE } from './keys'

export interface Checkpoint {
  /** Sequence number of the last entry reflected in the index (0: none). */
  seq: number
  /** Log position where replay starts: every entry before it is in the index. */
  position: number
  timeMs: number
}

export interface SegmentRecord {
  state: 'current' | 'active' | 'inactive' | 'archived' | 'recycled'
}

export interface MarkerRecord {
  kind: number
  position: number
  timeMs: number
  payload: unknown
}

/**
 * Index changes gathered between checkpoints and flushed as one LevelDB batch (hypercore's
 * lib/tx.js pattern). History is held as flat number arrays: no object per block.
 */
export class IndexBatch {
  readonly history: number[] = [] // block, seq, position, crc, block, seq, ...
  readonly segments = new Map<number, SegmentRecord>()
  readonly markers = new Map<number, MarkerRecord>()

  addBlock (block: number, seq: number, position: number, crc: number): void {
    this.history.push(block, seq, position, crc)
  }

  get size (): number {
    return this.history.length / 4 + this.segments.size + this.markers.size
  }
}

/**
 * The persistent index (classic-level). It is a cache of the log: losing it costs a rescan,
 * never data. Opening it takes LevelDB's lock file, which is also the store's lock: a second
 * process (a second mount, a CLI command on a mounted store) is refused, and a killed process
 * leaves no stale lock because the kernel drops it.
 */
export class IndexDb {
  private constructor (private readonly db: ClassicLevel<Buffer, Buffer>) {}

  static async open (location: string): Promise<IndexDb> {
    const db = new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new LogdiskError('STORE_LOCKED', 'store is in use by another process (mounted, or a command is running on it)', err)
      }
      throw new LogdiskError('IO', `cannot open the index at ${location}: ${(cause as Error | undefined)?.message ?? (err as Error).message}`, err)
    }
    return new IndexDb(db)
  }

  async checkpoint (): Promise<Checkpoint | undefined> {
    const value = await this.db.get(CHECKPOINT_KEY)
    return value === undefined ? undefined : unpack(value) as Checkpoint
  }

  /** Loads the newest version of every block into `map` (the last history key per block). */
  async loadNewest (map: BlockMap): Promise<void> {
    for await (const [block, , position, crc] of this.history()) map.set(block, position, crc)
  }

  /** All history in (block, seq) order, read in large batches. */
  async * history (from = 0): AsyncGenerator<[block: number, seq: number, position: number, crc: number]> {
    const it = this.db.iterator({ gte: historyKey(from, 0), lt: prefixRange(HISTORY_PREFIX).lt })
    try {
      while (true) {
        const rows = await it.nextv(4096)
        if (rows.length === 0) break
        for (const [key, value] of rows) {
          const h = decodeHistory(key, value)
          yield [h.block, h.seq, h.position, h.crc]
        }
      }
    } finally {
      await it.close()
    }
  }

  /** The version of `block` visible at cut `seq`: the newest with sequence <= seq. */
  async versionAt (block: number, seq: number): Promise<{ seq: number, position: number, crc: number } | undefined> {
    const it = this.db.iterator({ gte: historyKey(block, 0), lte: historyKey(block, seq), reverse: true, limit: 1 })
    try {
      const row = await it.next()
      if (row === undefined) return undefined
      const h = decodeHistory(row[0], row[1])
      return { seq: h.seq, position: h.position, crc: h.crc }
    } finally {
      await it.close()
    }
  }

  async segments (): Promise<Map<number, SegmentRecord>> {
    const out = new Map<number, SegmentRecord>()
    for await (const [key, value] of this.db.iterator(prefixRange(SEGMENT_PREFIX))) {
      out.set(readU64BE(key, 1), unpack(value) as SegmentRecord)
    }
    return out
  }

  async markers (): Promise<Map<number, MarkerRecord>> {
    const out = new Map<number, MarkerRecord>()
    for await (const [key, value] of this.db.iterator(prefixRange(MARKER_PREFIX))) {
      out.set(readU64BE(key, 1), unpack(value) as MarkerRecord)
    }
    return out
  }

  /** Writes a batch and the checkpoint that covers it, atomically. */
  async commit (batch: IndexBatch, checkpoint: Checkpoint): Promise<void> {
    const chained = this.db.batch()
    const h = batch.history
    for (let i = 0; i < h.length; i += 4) chained.put(historyKey(h[i], h[i + 1]), historyValue(h[i + 2], h[i + 3]))
    for (const [id, record] of batch.segments) chained.put(numberKey(SEGMENT_PREFIX, id), pack(record))
    for (const [seq, record] of batch.markers) chained.put(numberKey(MARKER_PREFIX, seq), pack(record))
    chained.put(CHECKPOINT_KEY, pack(checkpoint))
    await chained.write()
  }

  /** Drops every key: the index is then rebuilt from the log. */
  async clear (): Promise<void> {
    await this.db.clear()
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
