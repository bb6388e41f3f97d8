import { IndexBatch, type Checkpoint } from './index-db'
import type { IndexPart, StoreParts } from './parts'

/** Writers wait for the checkpoint in flight once this many times checkpointMaxBlocks versions wait. */
const BACKPRESSURE_FACTOR = 4

/**
 * The write side of the index: the batch of changes (block versions, entries, segment
 * records, snapshots, counters) gathered since the last checkpoint, and the checkpoints that
 * write it into LevelDB as one batch with the log position it covers (hypercore-storage's
 * tx.js). Only durable log bytes are indexed: the log is synced before each commit, so after
 * a crash the index never points past what survived. The index is a cache of the log;
 * recovery (recovery.ts) replays what the last checkpoint does not cover.
 */
export class IndexWriter implements IndexPart {
  /** Changes not yet in LevelDB. Writers add to it in the same step as their append. */
  batch = new IndexBatch()
  private checkpointing: Promise<void> | undefined
  /** What the last successful checkpoint covered. */
  last: Checkpoint
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly p: StoreParts, seq: number, position: number) {
    this.last = { seq, position, timeMs: p.now() }
    const interval = p.opts.checkpointIntervalMs ?? 1000
    if (interval > 0) {
      this.timer = setInterval(() => { this.checkpoint().catch(err => this.p.logger.error({ err: (err as Error).message }, 'index checkpoint failed; will retry')) }, interval)
      this.timer.unref()
    }
  }

  /** Block versions waiting for the next checkpoint. */
  get pendingBlocks (): number {
    return this.batch.history.length
  }

  /** Checkpoints in the background once enough block versions wait (checkpointMaxBlocks). */
  checkpointIfFull (): void {
    if (this.pendingBlocks >= (this.p.opts.checkpointMaxBlocks ?? 65536)) {
      this.checkpoint().catch(err => this.p.logger.error({ err: (err as Error).message }, 'index checkpoint failed; will retry'))
    }
  }

  /**
   * A bound on the batch (its memory, and the length of the checkpoint that takes it):
   * undefined while fewer than BACKPRESSURE_FACTOR x checkpointMaxBlocks versions wait, else a
   * promise that settles when the checkpoint in flight does (writers wait for it, under the
   * append lock, which a checkpoint never takes).
   */
  backpressure (): Promise<void> | undefined {
    if (this.checkpointing === undefined) return undefined
    if (this.pendingBlocks < BACKPRESSURE_FACTOR * (this.p.opts.checkpointMaxBlocks ?? 65536)) return undefined
    return this.checkpointing.catch(() => undefined)
  }

  /**
   * Writes the changes gathered since the last checkpoint into LevelDB as one batch, with the
   * log position they cover, after syncing the log.
   */
  checkpoint (): Promise<void> {
    if (this.checkpointing) return this.checkpointing
    if (this.batch.size === 0) return Promise.resolve()
    const batch = this.batch
    const cp: Checkpoint = { seq: this.p.log.seq, position: this.p.log.completedPosition, timeMs: this.p.now() }
    this.batch = new IndexBatch()
    this.checkpointing = (async () => {
      try {
        const started = Date.now()
        await this.p.log.syncAll()
        // Segment records as they are now, not as staged: a mirror copy dropped during the
        // sync above was recorded on its own (recordDrops), and the record staged before
        // would name it again, so the next open would read the copy that fell behind
        // (simulation seed 16400036).
        for (const id of batch.segments.keys()) batch.segments.set(id, this.p.segments.recordOf(id))
        const synced = Date.now()
        await this.p.db.commit(batch, cp, this.p.opts.indexCommitChunkOps, this.last.seq)
        this.last = cp
        this.p.logger.debug?.({ versions: batch.history.length, syncMs: synced - started, commitMs: Date.now() - synced }, 'checkpoint')
      } catch (err) {
        this.batch = mergeBatches(batch, this.batch)
        throw err
      } finally {
        this.checkpointing = undefined
      }
    })()
    return this.checkpointing
  }

  /** Checkpoints until the index covers `seq` (a snapshot's reads and restores need it). */
  async checkpointThrough (seq: number): Promise<void> {
    while (this.last.seq < seq) {
      await this.checkpointing
      if (this.last.seq < seq) await this.checkpoint()
    }
  }

  /**
   * Commits the index and syncs LevelDB's log: for changes that precede deleting a file (a
   * moved, archived or recycled segment), which must survive power loss, not only kill -9.
   */
  async commitDurably (): Promise<void> {
    await this.checkpointing
    await this.checkpoint()
    await this.p.db.sync()
  }

  /**
   * Commits every change staged so far, whether or not a log entry follows it: unlike
   * checkpointThrough, which only looks at the log's sequence, this also takes changes a pass
   * staged with no entry of their own (a baseline merge's rows) whose commit failed.
   */
  async commitStaged (): Promise<void> {
    await this.checkpointing?.catch(() => undefined) // a failed one put its changes back: retried below
    await this.checkpoint()
  }

  /** A checkpoint in flight, if any (abandon waits for it). */
  inFlight (): Promise<void> | undefined {
    return this.checkpointing
  }

  stopTimer (): void {
    if (this.timer) clearInterval(this.timer)
  }
}

/** One batch holding `older`'s changes, then `newer`'s (a failed commit's changes go back in). */
function mergeBatches (older: IndexBatch, newer: IndexBatch): IndexBatch {
  const out = new IndexBatch()
  for (const b of [older, newer]) {
    out.history.takeAll(b.history)
    out.historyDeletes.takeAll(b.historyDeletes)
  }
  for (const [k, v] of older.segments) out.segments.set(k, v)
  for (const [k, v] of newer.segments) out.segments.set(k, v)
  for (const b of [older, newer]) {
    for (const [k, v] of b.entries) out.entries.set(k, v)
    for (const [k, v] of b.snapshots) out.snapshots.set(k, v)
    for (const [k, v] of b.counters) out.counters.set(k, v)
  }
  return out
}
