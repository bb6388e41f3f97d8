import { ClassicLevel } from 'classic-level'
import type { AbstractLevel } from 'abstract-level'
import { pack, unpack } from 'msgpackr'
import { LogdiskError } from '../errors'
import { BlockMap } from './block-map'
import { RecordList } from './record-list'
import { IndexWriteGuard, ROOM_FOR_FLUSH, isLevelDbOutOfRoom } from './index-write-guard'
import { nodeFileLayer, roomOf } from './file-layer'
import { formatBytes } from '../size-text'
import { INDEX_FORMAT_VERSION, TRIMMED } from './format'
import { VERSION_KEY, CHECKPOINT_KEY, CLEAN_CLOSE_KEY, PENDING_HEADERS_KEY, ENTRY_PREFIX, HISTORY_PREFIX, RECORD_PREFIX, SEGMENT_PREFIX, SNAPSHOT_PREFIX, RESIZE_PREFIX, counterKey, decodeHistory, decodeRecordKey, numberKey, prefixRange, readU64BE, recordKey } from './keys'
import { CHUNK_BLOCKS, ChunkVersions, forEachVersion, versionIn } from './history-record'
import { groupHistory, type RecordChange } from './history-changes'

/**
 * Operations per LevelDB write of one checkpoint (IndexDb.commit), and history records per
 * group of changes. What lies between two awaits of a commit runs on the event loop, in front
 * of every FUSE request: 256 operations (a record read, changed and encoded, or an entry
 * summary packed, and put) take ~1 ms. With 1024 (and 512 records per read) checkpoints held
 * the loop 4-6 ms at a time under random writes at depth 16 (perf: the longest busy stretches
 * were in commit); 256 / 128 lowered the event loop's delay p99 from 4.0 / 3.6 ms to
 * 3.2 / 2.9 ms and fio's p99 from 5.7 / 5.0 ms to 4.3 / 3.8 ms, IOPS alike (two alternating
 * pairs; p99 lower in 5 of 7 earlier pairs). Not 8192: a group's objects (~300 bytes a
 * record) live across the group's index reads and write, long enough to be promoted into old
 * space, as garbage only a full GC frees (old space peaked at 48.7 MiB with 1024 against
 * 57-62 with 8192).
 */
export const COMMIT_CHUNK_OPS = 256
/** History records read at once by a commit (one getMany): each slice between awaits stays short (above). */
export const READ_MANY = 128

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
  /**
   * Compaction freed entries of it whose bytes it has not punched yet: set in the same index
   * batch as their `freed` flags, cleared once the punches are done. A pass stopped in
   * between (an unmount during its batches, a kill -9) left those bytes allocated for good,
   * since a later pass sees the entries freed already; the next pass punches the freed runs
   * of a segment recorded so.
   */
  unpunched?: boolean
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
  /**
   * Marker entries: bytes in the log, header and payload (store format 4; older records lack
   * it, compaction reads it from the marker's header). Kept when the marker is freed: its
   * header may be a free header or punched out by then.
   */
  bytes?: number
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
  /**
   * The volume's size at the cut: the size of the snapshot's image. Absent in snapshots of
   * releases before it (their markers lack it): those take the volume's current size.
   */
  sizeBytes?: number
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
  /** Resizes by the seq of their marker (snapshots.ts ResizeRecord). */
  readonly resizes = new Map<number, { fromBytes: number, toBytes: number }>()
  readonly counters = new Map<string, number>()

  addBlock (block: number, seq: number, position: number, crc: number): void {
    this.history.push4(block, seq, position, crc)
  }

  get size (): number {
    return this.history.length + this.historyDeletes.length + this.segments.size + this.entries.size + this.snapshots.size + this.resizes.size + this.counters.size
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

/** Versions as flat rows of four numbers: block, seq, position, crc (historyBatches). */
export type HistoryRows = ArrayLike<number>

export class IndexDb {
  /** Every write goes through it: one that failed is followed by a flush before more count (index-write-guard.ts). */
  private readonly writes: IndexWriteGuard

  private constructor (private readonly db: LevelDb, private readonly gate?: IndexGate, location?: string) {
    this.writes = new IndexWriteGuard(db, location)
  }

  static async open (location: string): Promise<IndexDb> {
    const db = new ClassicLevel<Buffer, Buffer>(location, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    try {
      await db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new LogdiskError('STORE_LOCKED', 'store is in use by another process (mounted, or a command is running on it)', err)
      }
      const message = (cause as Error | undefined)?.message ?? (err as Error).message
      if (isLevelDbOutOfRoom(err)) throw await noRoomToOpen(location, err)
      throw new LogdiskError('IO', `cannot open the index at ${location}: ${message}`, err)
    }
    return new IndexDb(db as unknown as LevelDb, undefined, location)
  }

  /** An index over any abstract-level database (the simulation's in-memory one). */
  static async openLevel (db: LevelDb, gate?: IndexGate): Promise<IndexDb> {
    await db.open()
    return new IndexDb(db, gate)
  }

  private async get (key: Buffer): Promise<Buffer | undefined> {
    await this.gate?.('index.read')
    await this.writes.ready()
    return this.db.get(key)
  }

  /** The rows of a range, one index read (up to `batch` rows) at a time. */
  private async * rowBatches (options: Record<string, unknown>, batch: number): AsyncGenerator<Array<[Buffer, Buffer]>> {
    await this.writes.ready()
    const epoch = this.writes.epoch
    const it = this.db.iterator(options)
    try {
      while (true) {
        await this.gate?.('index.read')
        const rows = await it.nextv(batch).catch(err => { throw this.reopened(epoch, err) })
        if (rows.length === 0) break
        yield rows
      }
    } finally {
      await it.close()
    }
  }

  /** Iterates rows of a range in batches; each batch is one index read. */
  private async * rows (options: Record<string, unknown>, batch: number): AsyncGenerator<[Buffer, Buffer]> {
    for await (const rows of this.rowBatches(options, batch)) yield * rows
  }

  async checkpoint (): Promise<Checkpoint | undefined> {
    const value = await this.get(CHECKPOINT_KEY)
    return value === undefined ? undefined : unpack(value) as Checkpoint
  }

  async formatVersion (): Promise<number> {
    const value = await this.get(VERSION_KEY)
    return value === undefined ? 0 : unpack(value) as number
  }

  /** Loads the newest version of every block into `map` (records come oldest first per chunk). */
  async loadNewest (map: BlockMap): Promise<void> {
    for await (const [key, value] of this.rows(prefixRange(RECORD_PREFIX), 4096)) {
      const { chunk, seq } = decodeRecordKey(key)
      const first = chunk * CHUNK_BLOCKS
      forEachVersion(value, (offset, position, crc) => map.set(first + offset, position, crc, seq))
    }
  }

  /**
   * All history from block `from` on, in (block, seq) order: each chunk's records are read
   * (oldest first) and their versions given out block by block.
   */
  async * history (from = 0): AsyncGenerator<[block: number, seq: number, position: number, crc: number]> {
    for await (const rows of this.historyBatches(from)) {
      for (let i = 0; i < rows.length; i += 4) yield [rows[i], rows[i + 1], rows[i + 2], rows[i + 3]]
    }
  }

  /**
   * history() in batches of whole chunks, one index read each: the versions as flat rows of
   * four numbers (block, seq, position, crc). For walks over every version (compaction's
   * judgement): a version each through an async generator was a promise, a result object and
   * an array, ~800 MiB of garbage in a compaction after 3 GiB of sequential writes (measured
   * with the sampling heap profiler; a pass after a 2 GiB prefill and 2.5 GiB of sequential
   * writes took 4.3-4.5 s with it, 2.9-3.0 s without). `readRows`: records per index read (a
   * batch ends with the last whole chunk of a read). A chunk with more than `holdVersions`
   * versions is not held whole: it is read again group of blocks by group (hotChunkBatches).
   */
  async * historyBatches (from = 0, readRows = 4096, holdVersions = HOLD_CHUNK_VERSIONS): AsyncGenerator<HistoryRows> {
    const startChunk = Math.floor(from / CHUNK_BLOCKS)
    let chunk = -1
    // Typed arrays, reused and grown by doubling: growing plain arrays of a read's versions
    // (a million numbers after sequential writes) put their copies in V8's large-object space,
    // which only a full GC frees.
    const held = new ChunkRows() // offset, seq, position, crc of the chunk's versions, oldest record first
    const out = new ChunkRows()
    // The chunk being read has more versions than may be held: skipped here, read again by groups.
    let hot = false
    for await (const rows of this.rowBatches({ gte: recordKey(startChunk, 0), lt: prefixRange(RECORD_PREFIX).lt }, readRows)) {
      for (const [key, value] of rows) {
        const k = decodeRecordKey(key)
        if (k.chunk !== chunk) {
          if (hot) {
            if (out.length > 0) yield out.take()
            yield * this.hotChunkBatches(chunk, from, readRows, holdVersions)
            hot = false
          } else if (held.length > 0) held.sortInto(out, chunk * CHUNK_BLOCKS, from, 0, CHUNK_BLOCKS)
          chunk = k.chunk
        }
        if (hot) continue
        held.seq = k.seq
        forEachVersion(value, held.hold)
        if (held.length > 4 * holdVersions) {
          hot = true
          held.length = 0
        }
      }
      // The last chunk read may go on in the next read: only whole chunks are given out, as a
      // copy of their own (the caller may keep it).
      if (out.length > 0) yield out.take()
    }
    if (hot) yield * this.hotChunkBatches(chunk, from, readRows, holdVersions)
    else if (held.length > 0) held.sortInto(out, chunk * CHUNK_BLOCKS, from, 0, CHUNK_BLOCKS)
    if (out.length > 0) yield out.take()
  }

  /**
   * The versions of a chunk with too many to hold (one block rewritten a million times inside
   * the history window: a database's header page), in the same (block, seq) order: counted per
   * block first, then read again for each group of neighbouring blocks whose versions fit in
   * `holdVersions`. A block with more than that is a group of its own, given out as read (a
   * block's versions come in sequence order already). 300,000 versions of one block took a
   * compaction from 105 to 166 MiB held whole (measured); the index is read a few times more.
   */
  private async * hotChunkBatches (chunk: number, from: number, readRows: number, holdVersions: number): AsyncGenerator<HistoryRows> {
    const range = { gte: recordKey(chunk, 0), lt: recordKey(chunk + 1, 0) }
    const counts = new Float64Array(CHUNK_BLOCKS)
    for await (const rows of this.rowBatches(range, readRows)) {
      for (const [, value] of rows) forEachVersion(value, offset => { counts[offset]++ })
    }
    const first = chunk * CHUNK_BLOCKS
    const group = new ChunkRows()
    const out = new ChunkRows()
    for (let lo = Math.max(0, from - first); lo < CHUNK_BLOCKS;) {
      let hi = lo + 1
      let n = counts[lo]
      while (hi < CHUNK_BLOCKS && n + counts[hi] <= holdVersions) n += counts[hi++]
      if (n > 0) {
        group.only = [lo, hi]
        for await (const rows of this.rowBatches(range, readRows)) {
          for (const [key, value] of rows) {
            group.seq = decodeRecordKey(key).seq
            forEachVersion(value, group.hold)
          }
          if (hi - lo === 1 && group.length >= 4 * holdVersions) {
            group.sortInto(out, first, from, lo, hi)
            yield out.take()
          }
        }
        if (group.length > 0) group.sortInto(out, first, from, lo, hi)
        if (out.length > 0) yield out.take()
      }
      lo = hi
    }
  }

  /** The version of `block` visible at cut `seq`: the newest with sequence <= seq. */
  async versionAt (block: number, seq: number): Promise<{ seq: number, position: number, crc: number } | undefined> {
    return (await this.versionsAt([block], seq))[0]
  }

  /**
   * versionAt for many blocks at one cut, in increasing block order, through one iterator
   * that seeks from chunk to chunk: for each, the chunk's records at or before the cut, newest
   * first, until every block asked of that chunk is found or the chunk has no older record.
   */
  async versionsAt (blocks: ArrayLike<number>, seq: number): Promise<Array<{ seq: number, position: number, crc: number } | undefined>> {
    const out: Array<{ seq: number, position: number, crc: number } | undefined> = new Array(blocks.length).fill(undefined)
    if (blocks.length === 0) return out
    const firstChunk = Math.floor(blocks[0] / CHUNK_BLOCKS)
    const lastChunk = Math.floor(blocks[blocks.length - 1] / CHUNK_BLOCKS)
    await this.writes.ready()
    const epoch = this.writes.epoch
    const it = this.db.iterator({ gte: recordKey(firstChunk, 0), lte: recordKey(lastChunk, seq), reverse: true })
    try {
      for (let i = 0; i < blocks.length;) {
        const chunk = Math.floor(blocks[i] / CHUNK_BLOCKS)
        let end = i
        while (end < blocks.length && Math.floor(blocks[end] / CHUNK_BLOCKS) === chunk) end++
        let missing = end - i
        await this.gate?.('index.read')
        it.seek(recordKey(chunk, seq)) // reverse: the last key at or before it
        let batch = 4
        while (missing > 0) {
          const rows = await it.nextv(batch)
          batch = Math.min(batch * 4, 256)
          let done = rows.length === 0
          for (const [key, value] of rows) {
            const k = decodeRecordKey(key)
            if (k.chunk !== chunk) { done = true; break }
            for (let j = i; j < end; j++) {
              if (out[j] !== undefined) continue
              const v = versionIn(value, blocks[j] - chunk * CHUNK_BLOCKS)
              // A trimmed version's CRC field names its holder (format.ts trimHolder): compaction's business, not a reader's.
              if (v !== undefined) { out[j] = { seq: k.seq, position: v.position, crc: v.position === TRIMMED ? 0 : v.crc }; missing-- }
            }
            if (missing === 0) break
          }
          if (done) break
          if (missing > 0) await this.gate?.('index.read')
        }
        i = end
      }
    } catch (err) {
      throw this.reopened(epoch, err)
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
    for await (const batch of this.entryBatches(from, to, reverse)) yield * batch
  }

  /** entries() one index read at a time: for walks over the whole log (compaction), without a promise and result object per entry. */
  async * entryBatches (from: number, to: number, reverse = false): AsyncGenerator<Array<[seq: number, entry: EntryRecord]>> {
    for await (const rows of this.rowBatches({ gte: numberKey(ENTRY_PREFIX, from), lte: numberKey(ENTRY_PREFIX, to), reverse }, 1024)) {
      yield rows.map(([key, value]) => [readU64BE(key, 1), unpack(value) as EntryRecord])
    }
  }

  async entry (seq: number): Promise<EntryRecord | undefined> {
    const value = await this.get(numberKey(ENTRY_PREFIX, seq))
    return value === undefined ? undefined : unpack(value) as EntryRecord
  }

  /** The resizes the index knows (keys.ts 'r'), oldest first. */
  async resizes (): Promise<Array<{ seq: number, fromBytes: number, toBytes: number }>> {
    const out: Array<{ seq: number, fromBytes: number, toBytes: number }> = []
    for await (const [key, value] of this.rows(prefixRange(RESIZE_PREFIX), 1024)) {
      const r = unpack(value) as { fromBytes: number, toBytes: number }
      out.push({ seq: readU64BE(key, 1), fromBytes: r.fromBytes, toBytes: r.toBytes })
    }
    return out
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

  /**
   * Writes a batch and the checkpoint that covers it (in its last LevelDB write).
   * `committedThrough`, when given, is the seq of the checkpoint before this one: a record of
   * an entry after it that only gains versions (no frees) is not in the index yet, so it is
   * written without reading it first. Random 4 KiB writes make one new record each, and
   * reading it back was a LevelDB miss per write on the thread pool (issue 11: random writes at
   * depth 16 +11%, p99 -15% in three alternating pairs). An earlier try of the same batch that
   * failed part way may have written the record already: with the same versions, which the
   * whole write repeats. A record this commit writes twice (it falls in two groups) is read the
   * second time, as before.
   */
  async commit (batch: IndexBatch, checkpoint: Checkpoint, chunkOps = COMMIT_CHUNK_OPS, committedThrough?: number): Promise<void> {
    // Written in LevelDB batches of at most `chunkOps` operations, the checkpoint (and
    // version) in the last one: a big batch neither holds the event loop for the whole of it
    // (a bounded pause per chunk) nor builds one huge LevelDB write batch and memtable insert
    // (memory). A crash between chunks leaves rows past the old checkpoint; replay from it
    // makes the same changes again (a history record is read, changed and written whole:
    // setting a version twice, or deleting it twice, is the same as once; history deletes
    // only follow a synced log, see IndexWriter.checkpoint), so it is safe.
    await this.writes.ready()
    let chained = new ReopenSafeBatch(this.db, this.writes)
    let ops = 0
    // Awaited only when a chunk is full: an await per operation cost a turn of the event
    // loop per row.
    const writeChunk = async (): Promise<void> => {
      await this.gate?.('index.commit')
      await chained.write()
      chained = new ReopenSafeBatch(this.db, this.writes)
      ops = 0
    }
    const table = new ChunkVersions()
    /** Records this commit wrote without reading them (`committedThrough`), by chunk and seq. */
    const unread = new Set<string>()
    const isNew = (c: RecordChange): boolean => {
      if (committedThrough === undefined || c.seq <= committedThrough || c.deletes.length > 0) return false
      const k = `${c.chunk}:${c.seq}`
      if (unread.has(k)) return false
      unread.add(k)
      return true
    }
    for (const changes of groupHistory(batch.history, batch.historyDeletes, chunkOps)) {
      // This group may change a record of the one before: it must read what that one wrote.
      if (ops > 0) await writeChunk()
      for (let i = 0; i < changes.length; i += READ_MANY) {
        const part = changes.slice(i, i + READ_MANY)
        const keys = part.map(c => recordKey(c.chunk, c.seq))
        const old = await this.readRecords(keys, part.map(isNew))
        for (let j = 0; j < part.length; j++) {
          const value = applyChanges(old[j] === undefined ? table.clear() : table.decode(old[j]!), part[j]).encode()
          if (value !== undefined) chained.put(keys[j], value)
          else if (old[j] !== undefined) chained.del(keys[j])
          else continue
          ops++
        }
      }
    }
    for (const [id, record] of batch.segments) { chained.put(numberKey(SEGMENT_PREFIX, id), pack(record)); if (++ops >= chunkOps) await writeChunk() }
    for (const [seq, record] of batch.entries) { chained.put(numberKey(ENTRY_PREFIX, seq), pack(record)); if (++ops >= chunkOps) await writeChunk() }
    for (const [seq, record] of batch.snapshots) {
      if (record) chained.put(numberKey(SNAPSHOT_PREFIX, seq), pack(record))
      else chained.del(numberKey(SNAPSHOT_PREFIX, seq))
      if (++ops >= chunkOps) await writeChunk()
    }
    for (const [seq, r] of batch.resizes) chained.put(numberKey(RESIZE_PREFIX, seq), pack({ fromBytes: r.fromBytes, toBytes: r.toBytes }))
    for (const [name, n] of batch.counters) chained.put(counterKey(name), pack(n))
    chained.put(CHECKPOINT_KEY, pack(checkpoint))
    chained.put(VERSION_KEY, pack(INDEX_FORMAT_VERSION))
    await this.gate?.('index.commit')
    await chained.write()
  }

  /** The records `keys` as stored, but undefined without a read where `isNew` says so. */
  private async readRecords (keys: Buffer[], isNew: boolean[]): Promise<Array<Buffer | undefined>> {
    const ask = keys.filter((_, j) => !isNew[j])
    if (ask.length === 0) return new Array<Buffer | undefined>(keys.length)
    await this.gate?.('index.read')
    await this.writes.ready()
    const got = await this.db.getMany(ask)
    if (ask.length === keys.length) return got
    let k = 0
    return keys.map((_, j) => isNew[j] ? undefined : got[k++])
  }

  /**
   * Converts an index of layout 2 (a key per block version, 'h') to records ('x'), chunk by
   * chunk: each LevelDB batch puts a chunk's records and deletes its 'h' keys together, so a
   * crash in between leaves some chunks converted and the rest to do (the version is still
   * 2); the version is written last, synced.
   */
  async upgradeFromLayout2 (): Promise<void> {
    let chained = this.db.batch()
    let chunk = -1
    const bySeq = new Map<number, ChunkVersions>()
    const flushChunk = (): void => {
      for (const [seq, t] of bySeq) chained.put(recordKey(chunk, seq), t.encode()!)
      bySeq.clear()
    }
    for await (const [key, value] of this.rows(prefixRange(HISTORY_PREFIX), 4096)) {
      const h = decodeHistory(key, value)
      const c = Math.floor(h.block / CHUNK_BLOCKS)
      if (c !== chunk) {
        flushChunk()
        if (chained.length >= COMMIT_CHUNK_OPS) { await this.gate?.('index.commit'); await this.writes.run(() => chained.write()); chained = this.db.batch() }
        chunk = c
      }
      let t = bySeq.get(h.seq)
      if (t === undefined) bySeq.set(h.seq, t = new ChunkVersions())
      t.set(h.block - c * CHUNK_BLOCKS, h.position, h.crc)
      chained.del(key)
    }
    flushChunk()
    chained.put(VERSION_KEY, pack(INDEX_FORMAT_VERSION))
    await this.gate?.('index.commit')
    await this.writes.run(() => chained.write({ sync: true } as object))
  }

  /**
   * Writes segment records alone, synced (LevelDB's log flushed): for facts that must be
   * durable before the store acknowledges anything more, like a mirror copy that fell behind.
   */
  async putSegments (records: Map<number, SegmentRecord>): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.batch([...records].map(([id, record]) => ({ type: 'put' as const, key: numberKey(SEGMENT_PREFIX, id), value: pack(record) })), { sync: true } as object))
  }

  /**
   * Records header writes about to be made in place, synced (see keys.ts 'p'; the file
   * pending-headers.ts holds the same for a rebuild). The sync also makes every index change
   * before it durable (the pass's fence checkpoint): a crash while the headers are written
   * leaves an index to replay from, not a rebuild, which would lose the entry summaries of
   * the runs already freed (FORMAT.md, open points).
   */
  async putPending (pending: PendingHeaders): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.batch([{ type: 'put', key: PENDING_HEADERS_KEY, value: pack(pending) }], { sync: true } as object))
  }

  /**
   * Marks the entries `seqs` freed (their free headers are in the log: redoPendingHeaders).
   * Not synced: written before the pending record is cleared, and LevelDB keeps its writes in
   * order, so a crash that keeps the clearing keeps these too (else the record redoes them).
   */
  async markFreed (seqs: number[]): Promise<void> {
    const freed: Array<[number, EntryRecord]> = []
    for (const seq of seqs) {
      const e = await this.entry(seq)
      if (e !== undefined && e.freed !== true) freed.push([seq, { ...e, freed: true }])
    }
    await this.putFreed(freed, new Map())
  }

  /**
   * Entries a pass wrote free headers for, with their `freed` flag set, and the records of the
   * segments they lie in (`unpunched`), in one batch written before the pending record is
   * cleared. Not synced, as markFreed: a crash that keeps the clearing keeps these too. Without
   * them a kill -9 between the clearing and the pass's commit left free entries on disk that
   * the index knew nothing of (free-headers-kill-before-flags.test.ts).
   */
  async putFreed (entries: Array<[number, EntryRecord]>, segments: Map<number, SegmentRecord>): Promise<void> {
    if (entries.length === 0 && segments.size === 0) return
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.batch([
      ...entries.map(([seq, e]) => ({ type: 'put' as const, key: numberKey(ENTRY_PREFIX, seq), value: pack(e) })),
      ...[...segments].map(([id, record]) => ({ type: 'put' as const, key: numberKey(SEGMENT_PREFIX, id), value: pack(record) }))
    ]))
  }

  /** The pending header writes are done and durable; not synced (redoing them is harmless). */
  async clearPending (): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.del(PENDING_HEADERS_KEY))
  }

  async pending (): Promise<PendingHeaders | undefined> {
    const value = await this.get(PENDING_HEADERS_KEY)
    return value === undefined ? undefined : unpack(value) as PendingHeaders
  }

  /**
   * Where the log ended when the store was last closed cleanly (keys.ts 'l'); undefined
   * after an open that writes, until the next clean close.
   */
  async cleanClose (): Promise<{ seq: number, position: number } | undefined> {
    const value = await this.get(CLEAN_CLOSE_KEY)
    return value === undefined ? undefined : unpack(value) as { seq: number, position: number }
  }

  /** Records the clean close, synced: the checkpoint it names is durable with it. */
  async putCleanClose (end: { seq: number, position: number }): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.batch([{ type: 'put', key: CLEAN_CLOSE_KEY, value: pack(end) }], { sync: true } as object))
  }

  /**
   * Removes the record, synced, before an open appends anything: a power loss must never
   * bring it back in front of entries this store wrote (they would be refused as another
   * copy's).
   */
  async clearCleanClose (): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.batch([{ type: 'del', key: CLEAN_CLOSE_KEY }], { sync: true } as object))
  }

  /** Makes every write so far durable (a synced write flushes LevelDB's log). */
  async sync (): Promise<void> {
    await this.gate?.('index.sync')
    await this.writes.run(() => this.db.batch([{ type: 'put', key: VERSION_KEY, value: pack(INDEX_FORMAT_VERSION) }], { sync: true } as object))
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
    await this.writes.run(() => this.db.batch(rows.map(([key, value]) => ({ type: 'put' as const, key, value })), { sync: true } as object))
  }

  /** Drops every key: the index is then rebuilt from the log. */
  async clear (): Promise<void> {
    await this.gate?.('index.commit')
    await this.writes.run(() => this.db.clear())
  }

  async close (): Promise<void> {
    await this.writes.idle()
    await this.db.close()
  }

  /**
   * The error of a read whose iterator failed: when the database was reopened meanwhile (the
   * write guard clears LevelDB's background error so), one that says so; the read may be
   * tried again. Else `err` itself.
   */
  private reopened (epoch: number, err: unknown): unknown {
    if (this.writes.epoch === epoch) return err
    return new LogdiskError('IO', 'the index was reopened (after a failed write of it) during this read of it; try again', err)
  }
}

/**
 * The error of an open that failed for room, in one line: LevelDB's own ("IO error:
 * .../000017.ldb: No space left on device") said neither what was full nor how much to free
 * (helper-97 D3). An open writes the log's records into a table and starts a new log and
 * manifest; the room the write guard waits for (ROOM_FOR_FLUSH) is enough for that.
 */
async function noRoomToOpen (location: string, err: unknown): Promise<LogdiskError> {
  const room = await roomOf(nodeFileLayer, location)
  const free = room?.freeBytes ?? 0
  const more = Math.max(ROOM_FOR_FLUSH - free, 1048576)
  const on = room === undefined ? '' : ` (${formatBytes(free)} free of ${formatBytes(room.totalBytes)})`
  return new LogdiskError('NO_SPACE', `cannot open the index at ${location}: no room on its filesystem${on}, and opening it writes a new table and log there: free at least ${formatBytes(more)} on it and try again`, err)
}

/** A record's versions after one commit's changes: its sets, then its deletes (as layout 2 wrote puts before deletes). */
function applyChanges (table: ChunkVersions, change: RecordChange): ChunkVersions {
  const first = change.chunk * CHUNK_BLOCKS
  for (const [h, from, to] of change.sets) for (let i = from; i < to; i += 4) table.set(h[i] - first, h[i + 2], h[i + 3])
  for (const offset of change.deletes) table.delete(offset)
  return table
}

/**
 * Versions of a chunk held before historyBatches gives them out sorted by block: 8 MiB of rows.
 * Past it the chunk is read again by groups of blocks (IndexDb.hotChunkBatches).
 */
export const HOLD_CHUNK_VERSIONS = 262144

/**
 * Rows of four numbers in a typed array grown by doubling: while held, (block offset in the
 * chunk, seq, position, crc) in the order the index gives them (by seq); given out, (block,
 * seq, position, crc) sorted by block, each block's versions oldest first.
 */
class ChunkRows {
  rows = new Float64Array(1024)
  length = 0
  /** The seq of the record whose versions `hold` takes. */
  seq = 0
  /** Only offsets in [lo, hi) are held. */
  only: [number, number] = [0, CHUNK_BLOCKS]
  private order = new Int32Array(256)
  private readonly starts = new Int32Array(CHUNK_BLOCKS + 1)

  readonly hold = (offset: number, position: number, crc: number): void => {
    if (offset < this.only[0] || offset >= this.only[1]) return
    this.room(4)
    const rows = this.rows
    rows[this.length++] = offset
    rows[this.length++] = this.seq
    rows[this.length++] = position
    rows[this.length++] = crc
  }

  private room (more: number): void {
    if (this.length + more <= this.rows.length) return
    const grown = new Float64Array(Math.max(this.length + more, 2 * this.rows.length))
    grown.set(this.rows.subarray(0, this.length))
    this.rows = grown
  }

  /**
   * Appends the held rows of offsets [lo, hi) to `out` as (first + offset, seq, position, crc),
   * stable-sorted by offset (a counting sort: a block's versions stay oldest first), leaving
   * out blocks below `from`; empties this.
   */
  sortInto (out: ChunkRows, first: number, from: number, lo: number, hi: number): void {
    const held = this.rows
    const n = this.length / 4
    if (this.order.length < n) this.order = new Int32Array(2 * n)
    const order = this.order
    const starts = this.starts
    out.room(this.length)
    starts.fill(0)
    for (let i = 0; i < this.length; i += 4) starts[held[i] - lo + 1]++
    for (let o = 0; o < hi - lo; o++) starts[o + 1] += starts[o]
    for (let i = 0; i < n; i++) order[starts[held[4 * i] - lo]++] = 4 * i
    const rows = out.rows
    for (let j = 0; j < n; j++) {
      const i = order[j]
      if (first + held[i] < from) continue
      rows[out.length++] = first + held[i]
      rows[out.length++] = held[i + 1]
      rows[out.length++] = held[i + 2]
      rows[out.length++] = held[i + 3]
    }
    this.length = 0
  }

  /** A copy of the rows (the caller may keep it); empties this. */
  take (): Float64Array {
    const copy = this.rows.slice(0, this.length)
    this.length = 0
    return copy
  }
}

/**
 * A chained LevelDB batch that survives the write guard's reopen of the database
 * (index-write-guard.ts): the reopen closes every open batch, and a commit building one across
 * it failed with LevelDB's "Batch is not open" (helper-101 D1: a checkpoint, and so an
 * `unmount`, refused although room was back). Its operations are kept, and put again into a
 * new batch when the database was reopened since.
 */
class ReopenSafeBatch {
  /** Undefined once the database was reopened under it: made again at the write. */
  private chained: ReturnType<LevelDb['batch']> | undefined
  private epoch: number
  private readonly ops: Array<[Buffer, Buffer | undefined]> = []

  constructor (private readonly db: LevelDb, private readonly writes: IndexWriteGuard) {
    this.chained = db.batch()
    this.epoch = writes.epoch
  }

  put (key: Buffer, value: Buffer): void {
    this.ops.push([key, value])
    this.live()?.put(key, value)
  }

  del (key: Buffer): void {
    this.ops.push([key, undefined])
    this.live()?.del(key)
  }

  /** Writes it through the guard, which waits for (or makes) a reopen first. */
  async write (): Promise<void> {
    await this.writes.run(() => {
      let chained = this.live()
      if (chained === undefined) {
        // Made again here, with the database open (the guard waited for the reopen).
        chained = this.chained = this.db.batch()
        this.epoch = this.writes.epoch
        for (const [key, value] of this.ops) {
          if (value === undefined) chained.del(key)
          else chained.put(key, value)
        }
      }
      return chained.write()
    })
  }

  /** The chained batch, unless the database was reopened since it was made (a reopen may be under way). */
  private live (): ReturnType<LevelDb['batch']> | undefined {
    if (this.writes.epoch !== this.epoch) this.chained = undefined
    return this.chained
  }
}
