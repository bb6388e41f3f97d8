import { EntryKind } from './format'
import type { EntryRecord } from './index-db'
import type { PassFence } from './pass-fence'
import type { StoreParts } from './parts'

/**
 * Which marker entries a compaction may free (docs/FORMAT.md "What is kept"). A segment is
 * recycled only when every entry in it is free, and the pool counts a segment whole however
 * much of it is punched: while every marker stayed for good, each compaction that raised the
 * horizon, each snapshot deleted and each sync point pinned the segment it landed in. Measured
 * before this rule: 40 compactions of a store whose live data was 64 blocks left 40 segments,
 * and a store with `compact.every` and `snapshot.every` filled its pool in time.
 *
 * A marker may go when what it says is said by another, or no longer matters:
 * - a history marker whose horizon is below the store's: the marker that raised the horizon
 *   to where it is stays, and a rebuild takes the highest;
 * - a sync point at or before the horizon: `restore --at` refuses it anyway;
 * - a snapshot's marker once its deletion was durable when the fence was taken (not among
 *   the fence's cuts), unless it took the volume id of a snapshot that is still there (a
 *   rebuild would give that one its id back). A rebuild after the markers of deleted
 *   snapshots went counts volume ids on from the highest among the markers left;
 * - a deletion marker once its snapshot's marker is free, by this pass or an earlier one.
 *   Freed the other way round, a rebuild would bring the snapshot back without its versions.
 *   The pass frees segments in log order and makes each one's free headers durable before
 *   the next, and the snapshot's marker comes first in the log.
 * Write, move and trim entries are judged by their versions (compaction.ts), not here.
 */
export class MarkerLife {
  private readonly freeable = new Set<number>()

  constructor (private readonly p: StoreParts, private readonly fence: PassFence) {}

  /** Judges the entry at `seq`; call for each entry the pass may touch, in sequence order. */
  async consider (seq: number, e: EntryRecord): Promise<void> {
    if (e.freed === true || e.payload === undefined) return
    if (await this.mayFree(seq, e.kind, e.payload)) this.freeable.add(seq)
  }

  /** Whether the marker at `seq` was judged free to go. */
  has (seq: number): boolean {
    return this.freeable.has(seq)
  }

  private async mayFree (seq: number, kind: number, payload: Record<string, unknown>): Promise<boolean> {
    const horizon = this.p.history.horizon
    switch (kind) {
      case EntryKind.history:
        return typeof payload.horizon === 'number' && payload.horizon < horizon
      case EntryKind.sync:
        return seq <= horizon
      case EntryKind.snapshot: {
        const live = (cut: unknown): boolean => this.fence.heldCut(cut as number) || this.p.snapshotTable.list().some(s => s.seq === cut)
        return !live(seq) && (payload.displaced === undefined || !live(payload.displaced))
      }
      case EntryKind.deleteSnapshot: {
        const cut = payload.seq
        if (typeof cut !== 'number') return false
        if (this.freeable.has(cut)) return true
        const marker = await this.p.db.entry(cut)
        return marker === undefined || marker.freed === true
      }
      default:
        return false
    }
  }
}
