import { ClassicLevel } from 'classic-level'
import type { AbstractLevel } from 'abstract-level'
import { pack, unpack } from 'msgpackr'
import { LogdiskError } from '../errors'
import { BlockMap } from './block-map'
import { RecordList } from './record-list'
import { INDEX_FORMAT_VERSION } from './format'
import { VERSION_KEY, CHECKPOINT_KEY, PENDING_HEADERS_KEY, ENTRY_PREFIX, HISTORY_PREFIX, SEGMENT_PREFIX, SNAPSHOT_PREFIX, counterKey, decodeHistory, historyKey, historyValue, numberKey, prefixRange, readU64BE } from './keys'

/** Operations per LevelDB write of one checkpoint (IndexDb.commit). */
const COMMIT_CHUNK_OPS = 8192

export interface Checkpoint {
  /** Sequence number of the last entry reflected in the index (0: none). */
  seq: number
  /** Log position where replay starts: every entry before it is in the index. */
  position: number
  timeMs: number
}

/** Header writes into a sealed segment that must be redone whole if a crash tears them. */
export interface PendingHeaders {
  segment: number
  volumes: string[]
  headers: Array<[offset: number, bytes: Buffer]>
}

export interface SegmentRecord {
  state: 'current' | 'active' | 'inactive' | 'archived' | 'recycled'
  /** Pool volumes holding its copies (absent in records written before pools). */
  volumes?: string[]
  /** A complete copy is on backing storage (so local bytes may be punched or deleted). */
  archived?: boolean
}

/** One log entry, without its data: what `log` lists and what maps a time to a sequence. */
export interface EntryRecord {
  kind: number
  timeMs: number
  /** Log position of the entry's header. */
  position: number
  block: number
  count: number
  /** Marker entries: the decoded payload (sync note, snapshot name and id, ...). */
  payload?: Record<string, unknown>
  /** Compaction freed its data (every block dead). */
  freed?: boolean
}

/** A snapshot volume: a cut of the log at sequence `seq` (000 cl. 1-2). */
export interface SnapshotRecord {
  /** Volume id (like a LUN); null once a constant-id policy gave the id to a newer snapshot. */
  id: number | null
  name: string
  seq: number
  position: number
  timeMs: number
  /** Taken under fsfreeze (application-consistent) rather than only crash-consistent. */
  frozen: boolean
}

/**
 * Index changes gathered between checkpoints and flushed as one LevelDB batch (hypercore's
 * lib/tx.js pattern). History is held in typed-array chunks (record-list.ts): no object per
 * block, and no array copied as it grows.
 */
export class IndexBatch {
  /** New block versions: block, seq, position, crc. */
  readonly history = new RecordList(4)
  /** Versions compaction freed: block, seq. */
  readonly historyDeletes = new RecordList(2)
  readonly segments = new Map<number, SegmentRecord>()
  readonly entries = new Map<number, EntryRecord>()
  /** Snapshot table changes by cut seq; null deletes. */
  readonly snapshots = new Map<number, SnapshotRecord | null>()
  readonly counters = new Map<string, number>()

  addBlock (block: number, seq: number, position: number, crc: number): void {
    this.history.push4(block, seq, position, crc)
  }

  get size (): number {
    return this.history.length + this.historyDeletes.length + this.segments.size + this.entries.size + this.snapshots.size + this.counters.size
  }
}

/**
 * The persistent index (classic-level). It is a cache of the log: losing it costs a rescan,
 * never data. Opening it takes LevelDB's lock file, which is also the store's lock: a second
 * process (a second mount, a CLI command on a mounted store) is refused, and a killed process
 * leaves no stale lock because the kernel drops it.
 */
export type LevelDb = AbstractLevel<Buffer, Buffer, Buffer>
/** Waits before an index operation: the simulation's scheduler (src/testing) orders them. */
export type IndexGate = (label: string) => Promise<void>

export class IndexDb {
  private constructor (private readonly db: LevelDb, private readonly gate?: IndexGate) {}

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
    return new IndexDb(db as unknown as LevelDb)
  }

  /** An index over any abstract-level database (the simulation's in-memory one). */
  static async openLevel (db: LevelDb, gate?: IndexGate): Promise<IndexDb> {
    await db.open()
    return new IndexDb(db, gate)
  }

  private async get (key: Buffer): Promise<Buffer | undefined> {
    await this.gate?.('index.read')
    return this.db.get(key)
  }

  /** Iterates rows of a range in batches; each batch is one index read. */
  private async * rows (options: Record<string, unknown>, batch: number): AsyncGenerator<[Buffer, Buffer]> {
    const it = this.db.iterator(options)
    try {
      while (true) {
        await this.gate?.('index.read')
        const rows = await it.nextv(batch)
        if (rows.length === 0) break
        yield * rows
      }
    } finally {
      await it.close()
    }
  }

  async checkpoint (): Promise<Checkpoint | undefined> {
    const value = await this.get(CHECKPOINT_KEY)
    return value === undefined ? undefined : unpack(value) as Checkpoint
  }

  async formatVersion (): Promise<number> {
    const value = await this.get(VERSION_KEY)
    return value === undefined ? 0 : unpack(value) as number
  }

  /** Loads the newest version of every block into `map` (the last history key per block). */
  async loadNewest (map: BlockMap): Promise<void> {
    for await (const [block, seq, position, crc] of this.history()) map.set(block, position, crc, seq)
  }

  /** All history in (block, seq) order, read in large batches. */
  async * history (from = 0): AsyncGenerator<[block: number, seq: number, position: number, crc: number]> {
    for await (const [key, value] of this.rows({ gte: historyKey(from, 0), lt: prefixRange(HISTORY_PREFIX).lt }, 4096)) {
      const h = decodeHistory(key, value)
      yield [h.block, h.seq, h.position, h.crc]
    }
  }

  /** The version of `block` visible at cut `seq`: the newest with sequence <= seq. */
  async versionAt (block: number, seq: number): Promise<{ seq: number, position: number, crc: number } | undefined> {
    for await (const [key, value] of this.rows({ gte: historyKey(block, 0), lte: historyKey(block, seq), reverse: true, limit: 1 }, 1)) {
      const h = decodeHistory(key, value)
      return { seq: h.seq, position: h.position, crc: h.crc }
    }
    return undefined
  }

  /**
   * versionAt for many blocks at one cut, in increasing block order, through one iterator
   * that seeks from block to block: no iterator made and closed per block.
   */
  async versionsAt (blocks: ArrayLike<number>, seq: number): Promise<Array<{ seq: number, position: number, crc: number } | undefined>> {
    const out: Array<{ seq: number, position: number, crc: number } | undefined> = []
    if (blocks.length === 0) return out
    const it = this.db.iterator({ gte: historyKey(blocks[0], 0), lte: historyKey(blocks[blocks.length - 1], seq), reverse: true })
    try {
      for (let i = 0; i < blocks.length; i++) {
        await this.gate?.('index.read')
        it.seek(historyKey(blocks[i], seq)) // reverse: the last key at or before it
        const row = await it.next()
        const h = row === undefined ? undefined : decodeHistory(row[0], row[1])
        out.push(h !== undefined && h.block === blocks[i] ? { seq: h.seq, position: h.position, crc: h.crc } : undefined)
      }
    } finally {
      await it.close()
    }
    return out
  }

  async segments (): Promise<Map<number, SegmentRecord>> {
    const out = new Map<number, SegmentRecord>()
    for await (const [key, value] of this.rows(prefixRange(SEGMENT_PREFIX), 1024)) {
      out.set(readU64BE(key, 1), unpack(value) as SegmentRecord)
    }
    return out
  }

  /** Entry summaries with seq in [from, to], in order (or reverse order). */
  async * entries (from: number, to: number, reverse = false): AsyncGenerator<[seq: number, entry: EntryRecord]> {
    for await (const [key, value] of this.rows({ gte: numberKey(ENTRY_PREFIX, from), lte: numberKey(ENTRY_PREFIX, to), reverse }, 1024)) {
      yield [readU64BE(key, 1), unpack(value) as EntryRecord]
    }
  }

  async entry (seq: number): Promise<EntryRecord | undefined> {
    const value = await this.get(numberKey(ENTRY_PREFIX, seq))
    return value === undefined ? undefined : unpack(value) as EntryRecord
  }

  async snapshots (): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = []
    for await (const [, value] of this.rows(prefixRange(SNAPSHOT_PREFIX), 1024)) out.push(unpack(value) as SnapshotRecord)
    return out
  }

  async counter (name: string): Promise<number> {
    const value = await this.get(counterKey(name))
    return value === undefined ? 0 : unpack(value) as number
  }

  /** Writes a batch and the checkpoint that covers it, atomically. */
  async commit (batch: IndexBatch, checkpoint: Checkpoint, chunkOps = COMMIT_CHUNK_OPS): Promise<void> {
    // Written in LevelDB batches of at most `chunkOps` operations, in the batch's
    // order, the checkpoint (and version) in the last one: a big batch neither holds the
    // event loop for the whole of it (a bounded pause per chunk) nor builds one huge LevelDB
    // write batch and memtable insert (memory). A crash between chunks leaves rows past the
    // old checkpoint; replay from it writes the same rows again (puts of the same keys, and
    // history deletes only follow a synced log, see IndexWriter.checkpoint), so it is safe.
    let chained = this.db.batch()
    let ops = 0
    // Awaited only when a chunk is full: an await per operation cost a turn of the event
    // loop per block version (65,536 of them in a full batch).
    const writeChunk = async (): Promise<void> => {
      await this.gate?.('index.commit')
      await chained.write()
      chained = this.db.batch()
      ops = 0
    }
    for (const h of batch.history.views()) {
      for (let i = 0; i < h.length; i += 4) { chained.put(historyKey(h[i], h[i + 1]), historyValue(h[i + 2], h[i + 3])); if (++ops >= chunkOps) await writeChunk() }
    }
    for (const d of batch.historyDeletes.views()) {
      for (let i = 0; i < d.length; i += 2) { chained.del(historyKey(d[i], d[i + 1])); if (++ops >= chunkOps) await writeChunk() }
    }
    for (const [id, record] of batch.segments) { chained.put(numberKey(SEGMENT_PREFIX, id), pack(record)); if (++ops >= chunkOps) await writeChunk() }
    for (const [seq, record] of batch.entries) { chained.put(numberKey(ENTRY_PREFIX, seq), pack(record)); if (++ops >= chunkOps) await writeChunk() }
    for (const [seq, record] of batch.snapshots) {
      if (record) chained.put(numberKey(SNAPSHOT_PREFIX, seq), pack(record))
      else chained.del(numberKey(SNAPSHOT_PREFIX, seq))
      if (++ops >= chunkOps) await writeChunk()
    }
    for (const [name, n] of batch.counters) chained.put(counterKey(name), pack(n))
    chained.put(CHECKPOINT_KEY, pack(checkpoint))
    chained.put(VERSION_KEY, pack(INDEX_FORMAT_VERSION))
    await this.gate?.('index.commit')
    await chained.write()
  }

  /**
   * Writes segment records alone, synced (LevelDB's log flushed): for facts that must be
   * durable before the store acknowledges anything more, like a mirror copy that fell behind.
   */
  async putSegments (records: Map<number, SegmentRecord>): Promise<void> {
    await this.gate?.('index.commit')
    await this.db.batch([...records].map(([id, record]) => ({ type: 'put' as const, key: numberKey(SEGMENT_PREFIX, id), value: pack(record) })), { sync: true } as object)
  }

  /** Records header writes about to be made in place, synced (see keys.ts 'p'). */
  async putPending (pending: PendingHeaders): Promise<void> {
    await this.gate?.('index.commit')
    await this.db.batch([{ type: 'put', key: PENDING_HEADERS_KEY, value: pack(pending) }], { sync: true } as object)
  }

  /** The pending header writes are done and durable; not synced (redoing them is harmless). */
  async clearPending (): Promise<void> {
    await this.gate?.('index.commit')
    await this.db.del(PENDING_HEADERS_KEY)
  }

  async pending (): Promise<PendingHeaders | undefined> {
    const value = await this.get(PENDING_HEADERS_KEY)
    return value === undefined ? undefined : unpack(value) as PendingHeaders
  }

  /** Makes every write so far durable (a synced write flushes LevelDB's log). */
  async sync (): Promise<void> {
    await this.gate?.('index.sync')
    await this.db.batch([{ type: 'put', key: VERSION_KEY, value: pack(INDEX_FORMAT_VERSION) }], { sync: true } as object)
  }

  /**
   * Every row of the index, from one consistent view (a LevelDB iterator reads a snapshot):
   * what a replica's index checkpoint holds (src/replicate/index-checkpoint.ts).
   */
  async * dump (): AsyncGenerator<[Buffer, Buffer]> {
    yield * this.rows({}, 4096)
  }

  /** Puts rows as they are (loading an index checkpoint into an empty index), synced. */
  async load (rows: Array<[Buffer, Buffer]>): Promise<void> {
    await this.gate?.('index.commit')
    await this.db.batch(rows.map(([key, value]) => ({ type: 'put' as const, key, value })), { sync: true } as object)
  }

  /** Drops every key: the index is then rebuilt from the log. */
  async clear (): Promise<void> {
    await this.gate?.('index.commit')
    await this.db.clear()
  }

  async close (): Promise<void> {
    await this.db.close()
  }
}
