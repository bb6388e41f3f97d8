import type { AbstractLevel } from 'abstract-level'
import { LogdiskError } from '../errors'
import { nodeFileLayer, roomOf } from './file-layer'

/**
 * What makes LevelDB's writes after a failed one durable again (helper-85, 2026-12-07).
 *
 * A write that fails inside LevelDB's log (ENOSPC while the store's filesystem was full for a
 * moment) can leave a torn record there, and LevelDB goes on appending behind it: the writes
 * after it are acknowledged, synced or not, and live in the memtable, but when the database
 * is opened again its log replay stops at the torn record ("dropping N bytes; Corruption:
 * checksum mismatch") and they are gone, silently. The index then lacked commits the store
 * had acted on (segments archived or recycled on their strength): flushed data read as
 * zeros, or the open was refused. (LevelDB itself stops taking writes only after a failed
 * fsync, not after a failed write.)
 *
 * So after a failed write, and before any write that overlapped it or came after it counts
 * as done, the memtable is flushed into a table file and LevelDB starts a new log (a
 * compaction of a key range no table holds: LevelDB compacts the memtable first, always),
 * and the old log, torn record and all, goes. Should that flush fail too (still no room),
 * LevelDB stops taking writes (its background error stays until it is opened again), and
 * every later write fails: nothing written after the failure is acknowledged until its
 * bytes are safe, and the store's log, which the index is a cache of, keeps everything (a
 * remount replays it). So the flush is tried only once the filesystem has room for a table
 * and a new log again (ROOM_FOR_FLUSH); until then a write fails NO_SPACE and tries later.
 * A flush that finds such a background error (a probe write after it fails) closes and
 * opens the database again (reopen, helper-99), which clears it.
 */
export class IndexWriteGuard {
  /** Failed writes so far: a write that saw this change while it ran may lie behind a torn record. */
  private failures = 0
  /** A failed write is not yet followed by a flush of the memtable. */
  private torn = false
  /** LevelDB may hold a background error (a probe after a flush failed): only a reopen clears it. */
  private stuck = false
  /** Reopens so far: a write that saw this change while it ran may be lost (see flushOnce). */
  private reopens = 0
  private flushing: Promise<void> | undefined
  /** Set while the database is closed and opened again: reads and writes wait for it. */
  private reopening: Promise<void> | undefined

  /** `location`: the database's directory, whose filesystem must have room before a flush (none in memory). */
  constructor (private readonly db: AbstractLevel<Buffer, Buffer, Buffer>, private readonly location?: string) {}

  /**
   * Resolves once no reopen of the database is under way (reads must not start while it
   * closes) and the database is open: one a reopen left closed (its open failed, the room gone
   * again meanwhile) is opened again here, with room, or this throws NO_SPACE saying so (not
   * LevelDB's "Database is not open" to every read). undefined when there is nothing to wait
   * for (no promise made on the common path: reads are many).
   */
  ready (): Promise<void> | undefined {
    if (this.reopening === undefined && !this.stuck) return undefined
    return (async () => {
      while (this.reopening !== undefined) await this.reopening.catch(() => undefined)
      if (this.stuck && this.db.status === 'closed') await this.flush()
    })()
  }

  /** Resolves once no reopen (and no flush, which may reopen) is under way. */
  async idle (): Promise<void> {
    while (this.reopening !== undefined || this.flushing !== undefined) {
      await (this.reopening ?? this.flushing)!.catch(() => undefined)
    }
  }

  /** How many times the database was reopened: a read that saw it change lost its iterator. */
  get epoch (): number {
    return this.reopens
  }

  async run<T> (write: () => Promise<T>): Promise<T> {
    await this.ready()
    if (this.torn || this.stuck) await this.flush()
    const seen = this.failures
    const epoch = this.reopens
    let result: T
    try {
      result = await write()
    } catch (err) {
      this.failures++
      this.torn = true
      throw this.said(err)
    }
    if (this.failures !== seen || this.torn) await this.flush()
    if (this.reopens !== epoch) {
      // Its bytes went into a log that the reopen replayed, perhaps behind a torn record.
      throw new LogdiskError('IO', `the index at ${this.location ?? '(memory)'} was reopened after a failed write while this write ran: it may be lost; write it again`)
    }
    return result
  }

  /**
   * A failed write as the user should read it: LevelDB's "IO error: <file>: No space left on
   * device" says neither which store's filesystem nor what to do (helper-101 D2).
   */
  private said (err: unknown): unknown {
    if (!isLevelDbOutOfRoom(err)) return err
    const message = (err as Error).message ?? ''
    return new LogdiskError('NO_SPACE', `the index at ${this.location ?? '(memory)'} could not be written: its filesystem is full (${message}); free some space on it (writes of the index go on once ${ROOM_FOR_FLUSH / 1048576} MiB are free)`, err)
  }

  /** Flushes the memtable into a table and starts a new log (one at a time). */
  private flush (): Promise<void> {
    // Cleared once settled (a `finally` inside an async function that throws before its
    // first await would clear it before it is even set, and keep the failure for good).
    this.flushing ??= this.flushOnce().finally(() => { this.flushing = undefined })
    return this.flushing
  }

  private async flushOnce (): Promise<void> {
    const compactRange = (this.db as unknown as { compactRange?: (start: Buffer, end: Buffer) => Promise<void> }).compactRange
    // A write failing while this flush runs may have torn the new log: another flush follows.
    const before = this.failures
    if (typeof compactRange === 'function') {
      await this.assertRoom()
      if (!this.stuck) {
        // LevelDB's CompactRange reports nothing: a memtable it could not write into a table
        // leaves a background error, which only the next write shows. The probe is that write
        // (a synced delete of a key no one writes), so a flush that failed is seen here, not
        // by a write acknowledged after it.
        await compactRange.call(this.db, BEYOND_EVERY_KEY, BEYOND_EVERY_KEY)
        try {
          await this.db.batch([{ type: 'del', key: BEYOND_EVERY_KEY }], { sync: true } as object)
        } catch {
          this.stuck = true
        }
      }
      if (this.stuck) await this.reopen()
    }
    if (this.failures === before) this.torn = false
  }

  /**
   * A background error (a table write or a sync that failed, ENOSPC in a moment without room)
   * stays in LevelDB until the database is opened again: every later write fails with it,
   * however much room there is (helper-97 D2: checkpoints and compaction stopped, the log grew
   * to 595 segments of a 16 MiB disk, close failed). So, with room again, the database is
   * closed and opened in place (the same instance: the store shares it).
   *
   * Safe for what was acknowledged: the open replays LevelDB's logs, which a torn record cuts
   * short, but every write acknowledged so far lies before any failed one (a write that saw a
   * failure while it ran is acknowledged only after a flush, and nothing is acknowledged while
   * LevelDB holds its error), or in tables. A write that ran meanwhile (it saw a failure and
   * waits for this) may lie behind a torn record: it fails (run). Iterators open on the
   * database are closed by the close: their next read fails (IndexDb.rowBatches says so), and
   * reads and writes that start meanwhile wait (ready).
   */
  private async reopen (): Promise<void> {
    const done = (async () => {
      await this.db.close()
      this.reopens++
      await this.db.open()
    })()
    this.reopening = done
    try {
      await done
    } catch (err) {
      // Still stuck: the next write tries again (the database stays closed until then).
      throw new LogdiskError('NO_SPACE', `the index at ${this.location ?? '(memory)'} holds an error from a moment without room and could not be opened again: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}; free some space on its filesystem`, err)
    } finally {
      this.reopening = undefined
    }
    this.stuck = false
  }

  /** Throws NO_SPACE while the database's filesystem has less room than a flush (or a reopen) needs. */
  private async assertRoom (): Promise<void> {
    if (this.location === undefined) return
    const free = (await roomOf(nodeFileLayer, this.location))?.freeBytes
    if (free !== undefined && free < ROOM_FOR_FLUSH) {
      throw new LogdiskError('NO_SPACE', `the index at ${this.location} cannot be written: its filesystem has ${Math.floor(free / 1048576)} MiB free and a write of it failed; free some space (it is written again once ${ROOM_FOR_FLUSH / 1048576} MiB are free)`)
    }
  }
}

/**
 * Whether a LevelDB error (an open's or a write's) is its filesystem's lack of room: LevelDB
 * reports it as text only ("IO error: <file>: No space left on device"), on the error or on
 * its cause, with no errno code to ask.
 */
export function isLevelDbOutOfRoom (err: unknown): boolean {
  const message = (err as Error | undefined)?.message ?? ''
  const cause = (err as { cause?: Error } | undefined)?.cause?.message ?? ''
  return /No space left on device/i.test(`${message} ${cause}`)
}

/** A key past every key of the index (keys.ts prefixes are single bytes below 0xff): no table overlaps it. */
const BEYOND_EVERY_KEY = Buffer.alloc(16, 0xff)

/** Room a flush needs: a table of a whole memtable (classic-level's 4 MiB) and a new log, twice over. */
export const ROOM_FOR_FLUSH = 16 * 1048576
