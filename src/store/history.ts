import { LogdiskError } from '../errors'
import { keepsHistory } from './archive-link'
import { EntryKind } from './format'
import type { EntryRecord } from './index-db'
import { DEFAULT_HISTORY_KEEP_MS } from './open-options'
import type { PassFence } from './pass-fence'
import type { HistoryPart, StoreParts } from './parts'
import { HISTORY_HORIZON } from './recovery'

/**
 * Points in time (F4): which points of the log can still be rebuilt, and how a user names
 * one. Every point younger than the history window (policy history.keep) stays restorable;
 * compaction may give up older points, but only after a history marker raising the horizon
 * is in the log, so an index rebuilt from the log knows it too. Snapshots are always kept.
 */
export class History implements HistoryPart {
  constructor (
    private readonly p: StoreParts,
    /** Points at or before this sequence may have lost versions (the log's history markers). */
    public horizon: number
  ) {}

  get keepMs (): number {
    return this.p.opts.historyKeepMs ?? DEFAULT_HISTORY_KEEP_MS
  }

  /** Changes the history window (policy set history.keep on a mounted store). */
  setKeepMs (ms: number): void {
    if (!(ms >= 0)) throw new LogdiskError('BAD_ARGUMENT', `history window ${ms} ms must be 0 or more`)
    ;(this.p.opts as { historyKeepMs?: number }).historyKeepMs = ms
  }

  /**
   * The first point the history window protects: every sequence from it on stays restorable.
   * Found by bisection over entry times (times never decrease along the log).
   */
  async windowStart (fence: PassFence): Promise<number> {
    // With backing storage every point stays restorable (versions are archived before they
    // are punched, and history keeps them): the window protects nothing more.
    if (keepsHistory(this.p.opts.archive)) return fence.seq + 1
    const keep = this.keepMs
    if (keep <= 0) return fence.seq + 1
    if (!Number.isFinite(keep)) return 1
    const since = this.p.now() - keep
    let lo = 1
    let hi = fence.seq + 1
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2)
      let found: [number, EntryRecord] | undefined
      for await (const e of this.p.db.entries(mid, fence.seq)) { found = e; break }
      if (!found || found[1].timeMs >= since) hi = mid
      else lo = found[0] + 1
    }
    return lo
  }

  /**
   * Raises the history horizon: a history marker goes into the log (durable) before any
   * version it gives up is freed, so that an index rebuilt from the log knows it too.
   */
  async raiseHorizon (horizon: number): Promise<void> {
    if (horizon <= this.horizon) return
    const log = this.p.log
    await log.lock.run(() => log.appendMarkerLocked(EntryKind.history, { horizon }))
    // The larger of two raises that met at the lock (a compaction's and a promote's) stands,
    // as recovery takes the largest marker.
    this.horizon = Math.max(this.horizon, horizon)
    this.p.index.batch.counters.set(HISTORY_HORIZON, this.horizon)
  }

  /**
   * The point in the log that `spec` names: a snapshot name, a sequence number (a sync
   * point's id is its sequence number), an ISO time, or a sync note (the newest such sync).
   */
  async resolvePoint (spec: string): Promise<{ seq: number, timeMs: number, what: string }> {
    const { db, log } = this.p
    await this.p.index.checkpointThrough(log.seq)
    if (log.seq === 0) throw new LogdiskError('NOT_FOUND', 'the log is empty: there is no point to go back to')
    const horizon = this.horizon
    const at = async (seq: number, what: string) => {
      if (seq <= horizon) {
        let oldest = ''
        for await (const [s, e] of db.entries(horizon + 1, log.seq)) { oldest = `sequence ${s} (${new Date(e.timeMs).toISOString()})`; break }
        throw new LogdiskError('BAD_ARGUMENT', `${what} is older than the history this store kept (compaction freed versions up to sequence ${horizon}; history.keep=${formatKeep(this.keepMs)}); the oldest point that can be restored is ${oldest || 'the newest write'}, and every snapshot`)
      }
      return { seq, timeMs: (await db.entry(seq))?.timeMs ?? 0, what }
    }
    const snap = this.p.snapshotTable.get(spec)
    if (snap) return { seq: snap.seq, timeMs: snap.timeMs, what: `snapshot ${snap.name}` }
    if (/^\d+$/.test(spec)) {
      const seq = Number(spec)
      if (seq < 1 || seq > log.seq) throw new LogdiskError('BAD_ARGUMENT', `sequence ${seq} is not in the log (it holds 1 to ${log.seq})`)
      return at(seq, `sequence ${seq}`)
    }
    if (/^\d{4}-\d{2}-\d{2}/.test(spec)) {
      const t = Date.parse(spec)
      if (Number.isNaN(t)) throw new LogdiskError('BAD_ARGUMENT', `"${spec}" is not an ISO time (like 2026-11-21T10:00:00Z)`)
      if (t > this.p.now()) throw new LogdiskError('BAD_ARGUMENT', `${spec} is in the future`)
      // Entries may have no record: markers compaction freed are gone from an index rebuilt
      // since (a deleted snapshot's, the first write's). So each probe takes the first entry
      // that has one at or after it; counting a gap as "after t" restored an older point
      // under the time asked for (found by a hostile test).
      const firstFrom = async (from: number, to: number): Promise<[number, EntryRecord] | undefined> => {
        for await (const found of db.entries(from, to)) return found
        return undefined
      }
      const first = await firstFrom(1, log.seq)
      if (!first || t < first[1].timeMs) {
        throw new LogdiskError('BAD_ARGUMENT', `${spec} is before the first write (the log starts at ${first ? new Date(first[1].timeMs).toISOString() : 'nothing'})`)
      }
      // Times never decrease along the log: the newest entry at or before t, by bisection.
      let lo = first[0]
      let hi = log.seq
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2)
        const found = await firstFrom(mid, hi)
        if (found && found[1].timeMs <= t) lo = found[0]
        else hi = mid - 1
      }
      return at(lo, `${new Date(t).toISOString()} (sequence ${lo})`)
    }
    for await (const [seq, e] of db.entries(1, log.seq, true)) {
      if (e.kind === EntryKind.sync && e.payload?.note === spec) return at(seq, `sync ${seq} "${spec}"`)
    }
    // Compaction frees the markers of sync points at or before the horizon (marker-life.ts).
    const forgotten = horizon > 0 ? ` (sync points at or before sequence ${horizon}, the history compaction gave up, are forgotten)` : ''
    throw new LogdiskError('NOT_FOUND', `--at "${spec}" is not a snapshot name, sequence number, ISO time or sync note${forgotten}`)
  }
}

/** history.keep as a user writes it. */
function formatKeep (ms: number): string {
  if (!Number.isFinite(ms)) return 'forever'
  for (const [unit, n] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms > 0 && ms % n === 0) return `${ms / n}${unit}`
  return `${ms}ms`
}
