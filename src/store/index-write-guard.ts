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
 * LevelDB stops taking writes for good (its background error stays until it is opened again),
 * and every later write fails: nothing written after the failure is acknowledged until its
 * bytes are safe, and the store's log, which the index is a cache of, keeps everything (a
 * remount replays it). So the flush is tried only once the filesystem has room for a table
 * and a new log again (ROOM_FOR_FLUSH); until then a write fails NO_SPACE and tries later.
 */
export class IndexWriteGuard {
  /** Failed writes so far: a write that saw this change while it ran may lie behind a torn record. */
  private failures = 0
  /** A failed write is not yet followed by a flush of the memtable. */
  private torn = false
  private flushing: Promise<void> | undefined

  /** `location`: the database's directory, whose filesystem must have room before a flush (none in memory). */
  constructor (private readonly db: AbstractLevel<Buffer, Buffer, Buffer>, private readonly location?: string) {}

  async run<T> (write: () => Promise<T>): Promise<T> {
    if (this.torn) await this.flush()
    const seen = this.failures
    let result: T
    try {
      result = await write()
    } catch (err) {
      this.failures++
      this.torn = true
      throw err
    }
    if (this.failures !== seen || this.torn) await this.flush()
    return result
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
    if (typeof compactRange === 'function') {
      if (this.location !== undefined) {
        const free = (await roomOf(nodeFileLayer, this.location))?.freeBytes
        if (free !== undefined && free < ROOM_FOR_FLUSH) {
          throw new LogdiskError('NO_SPACE', `the index at ${this.location} cannot be written: its filesystem has ${Math.floor(free / 1048576)} MiB free and a write of it failed; free some space (it is written again once ${ROOM_FOR_FLUSH / 1048576} MiB are free)`)
        }
      }
      await compactRange.call(this.db, BEYOND_EVERY_KEY, BEYOND_EVERY_KEY)
    }
    this.torn = false
  }
}

/** A key past every key of the index (keys.ts prefixes are single bytes below 0xff): no table overlaps it. */
const BEYOND_EVERY_KEY = Buffer.alloc(16, 0xff)

/** Room a flush needs: a table of a whole memtable (classic-level's 4 MiB) and a new log, twice over. */
const ROOM_FOR_FLUSH = 16 * 1048576
