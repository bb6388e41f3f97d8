import { MemoryLevel } from 'memory-level'
import { LogdiskError, fromSystemError } from '../errors'
import { IndexDb, type LevelDb } from '../store/index-db'
import type { Rng } from './rng'
import type { SimScheduler } from './sim-scheduler'

/**
 * The simulation's LevelDB: an in-memory abstract-level database per store location with
 * LevelDB's durability rules. A write batch is atomic; it survives power loss only once a
 * later (or its own) write with `sync: true` covered it; `crash` keeps every synced batch and
 * a random prefix of the rest, as LevelDB's write-ahead log does. One open database per
 * location at a time (LevelDB's lock, which is also the store's lock).
 */
type Op = { type: 'put', key: Buffer, value: Buffer } | { type: 'del', key: Buffer } | { type: 'clear' }

class Location {
  /** Batches known durable, oldest first (after a crash: one batch with the whole state). */
  durable: Op[][] = []
  /** Batches written since the last synced write. */
  unsynced: Op[][] = []
  open = false

  record (ops: Op[], sync: boolean): void {
    this.unsynced.push(ops)
    if (sync) {
      for (const b of this.unsynced) this.durable.push(b)
      this.unsynced = []
    }
  }
}

// MemoryLevel's protected _put/_del/_batch/_clear/_close are not in its typings.
const MemoryLevelBase = MemoryLevel as unknown as new (options: object) => {
  _put (key: Buffer, value: Buffer, options: object): Promise<void>
  _del (key: Buffer, options: object): Promise<void>
  _batch (operations: unknown[], options: object): Promise<void>
  _clear (options: object): Promise<void>
  _close (): Promise<void>
  open (): Promise<void>
  batch (operations: unknown[]): Promise<void>
}

class JournalingLevel extends MemoryLevelBase {
  /** Off while replaying what the location already holds. */
  journaling = true

  constructor (private readonly location: Location) {
    super({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  }

  async _put (key: Buffer, value: Buffer, options: { sync?: boolean }): Promise<void> {
    await super._put(key, value, options)
    if (this.journaling) this.location.record([{ type: 'put', key: Buffer.from(key), value: Buffer.from(value) }], options?.sync === true)
  }

  async _del (key: Buffer, options: { sync?: boolean }): Promise<void> {
    await super._del(key, options)
    if (this.journaling) this.location.record([{ type: 'del', key: Buffer.from(key) }], options?.sync === true)
  }

  async _batch (operations: Array<{ type: 'put' | 'del', key: Buffer, value?: Buffer }>, options: { sync?: boolean }): Promise<void> {
    await super._batch(operations, options)
    const ops: Op[] = operations.map(o => o.type === 'put'
      ? { type: 'put', key: Buffer.from(o.key), value: Buffer.from(o.value!) }
      : { type: 'del', key: Buffer.from(o.key) })
    if (this.journaling) this.location.record(ops, options?.sync === true)
  }

  async _clear (options: object): Promise<void> {
    await super._clear(options)
    if (this.journaling) this.location.record([{ type: 'clear' }], false)
  }

  async _close (): Promise<void> {
    this.location.open = false
    await super._close()
  }
}

export class SimIndexStorage {
  private readonly locations = new Map<string, Location>()

  constructor (private readonly scheduler?: SimScheduler) {}

  /** For the store's `openIndex` option. */
  readonly open = async (location: string): Promise<IndexDb> => {
    let loc = this.locations.get(location)
    if (!loc) this.locations.set(location, loc = new Location())
    if (loc.open) throw new LogdiskError('STORE_LOCKED', 'store is in use by another process (mounted, or a command is running on it)')
    if (this.scheduler) await this.scheduler.io(`index.open ${location}`)
    const db = new JournalingLevel(loc)
    await db.open()
    // Replay what is on "disk" without journaling it again.
    const state = snapshotOps(loc.durable.concat(loc.unsynced))
    db.journaling = false
    await db.batch(state.map(op => ({ type: 'put' as const, key: (op as { key: Buffer }).key, value: (op as { value: Buffer }).value })))
    db.journaling = true
    loc.durable = [state]
    loc.unsynced = []
    loc.open = true
    const sched = this.scheduler
    const gate = sched ? async (label: string) => { await sched.io(`${label} ${location}`).catch(err => { throw fromSystemError(err, `${label} ${location}`) }) } : undefined
    return IndexDb.openLevel(db as unknown as LevelDb, gate)
  }

  /**
   * Power loss: every location keeps its synced batches and a random prefix of the others.
   * Open databases are dropped (their process is gone).
   */
  crash (rng: Rng): void {
    for (const loc of this.locations.values()) {
      const keep = rng.int(loc.unsynced.length + 1)
      loc.durable = [snapshotOps(loc.durable.concat(loc.unsynced.slice(0, keep)))]
      loc.unsynced = []
      loc.open = false
    }
  }

  /** The operator deletes the index directory: the next open rebuilds it from the log. */
  destroy (location: string): void {
    const loc = this.locations.get(location)
    if (loc?.open) throw new Error(`index ${location} is open`)
    this.locations.delete(location)
  }
}

/** The state `batches` leave behind, as one batch of puts (so replays stay short). */
function snapshotOps (batches: Op[][]): Op[] {
  const state = new Map<string, Buffer>()
  for (const batch of batches) {
    for (const op of batch) {
      if (op.type === 'clear') state.clear()
      else if (op.type === 'put') state.set(op.key.toString('latin1'), op.value)
      else state.delete(op.key.toString('latin1'))
    }
  }
  return [...state].map(([k, v]) => ({ type: 'put', key: Buffer.from(k, 'latin1'), value: v }))
}
