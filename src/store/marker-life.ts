import { decodeHeader, entryBytes } from './entry'
import { ENTRY_HEADER_BYTES, EntryKind } from './format'
import { readUpTo } from './file-layer'
import type { EntryRecord } from './index-db'
import type { PassFence } from './pass-fence'
import type { StoreParts } from './parts'

/**
 * Which marker entries a compaction may free (docs/FORMAT.md "What is kept"). A segment is
 * recycled only when every entry in it is free, and the pool counts a segment whole however
 * much of it is punched: while every marker stayed for good, each compaction that raised the
 * horizon, each snapshot deleted and each sync point pinned the segment it landed in. Measured
 * before this rule: 40 compactions of a store whose live data was 64 blocks left 40 segments,
 * each counted by the pool as a full one, so `compact.every` with `snapshot.every` would use
 * up a pool in time with a few blocks of live data.
 *
 * A marker may go when what it says is said by another, or no longer matters:
 * - a history marker whose horizon is below the store's: the marker that raised the horizon
 *   to where it is stays, and a rebuild takes the highest;
 * - a sync point at or before the horizon: `restore --at` refuses it anyway;
 * - a snapshot's marker once its deletion was durable when the fence was taken (not among
 *   the fence's cuts), unless it took the volume id of a snapshot that is still there (a
 *   rebuild would give that one its id back) or it is the newest with the highest volume id
 *   given out (a rebuild would give that id out again);
 * - a deletion marker once its snapshot's marker is free, by this pass or an earlier one, and
 *   no copy on backing storage holds that marker. Freed the other way round, a rebuild would
 *   bring the snapshot back without its versions. The pass frees segments in log order and
 *   makes each one's free headers durable before the next, and the snapshot's marker comes
 *   first in the log.
 * Write, move and trim entries are judged by their versions (compaction.ts), not here.
 */
export class MarkerLife {
  private readonly freeable = new Set<number>()
  /** Log positions of the snapshot markers this pass frees (their deletions look them up). */
  private readonly snapshotMarkers = new Map<number, number>()

  constructor (private readonly p: StoreParts, private readonly fence: PassFence) {}

  /**
   * Judges the entry at `seq`; call for each entry the pass may touch, in sequence order. A
   * marker that may go gets its length in its record (`bytes`, read from its header when the
   * record is older than store format 4), which the free header of a run ending with it needs.
   */
  async consider (seq: number, e: EntryRecord): Promise<void> {
    if (e.freed === true || e.payload === undefined) return
    if (!(await this.mayFree(seq, e.kind, e.payload, e.position))) return
    if (e.bytes === undefined) {
      const bytes = await this.lengthFromHeader(seq, e)
      // Its header is not its own: a pass that stopped before its index commit freed a run
      // beginning with it. It stays for now (its length is not known).
      if (bytes === undefined) return
      e.bytes = bytes
    }
    this.freeable.add(seq)
    if (e.kind === EntryKind.snapshot) this.snapshotMarkers.set(seq, e.position)
  }

  /** Whether the marker at `seq` was judged free to go. */
  has (seq: number): boolean {
    return this.freeable.has(seq)
  }

  private async mayFree (seq: number, kind: number, payload: Record<string, unknown>, position: number): Promise<boolean> {
    const horizon = this.p.history.horizon
    const table = this.p.snapshotTable
    switch (kind) {
      case EntryKind.history:
        return typeof payload.horizon === 'number' && payload.horizon < horizon
      case EntryKind.sync:
        return seq <= horizon
      case EntryKind.snapshot: {
        // The fence's cuts: every snapshot standing now with a cut at or before the fence was
        // standing then too (a new one's cut is past it), and one deleted since is still there.
        const held = (cut: unknown): boolean => this.fence.heldCut(cut as number)
        if (held(seq) || (payload.displaced !== undefined && held(payload.displaced))) return false
        // The newest marker with the highest volume id stays (0: not known yet, all of them do).
        return payload.id === null || (payload.id as number) < table.highestId || seq < table.highestIdSeq
      }
      case EntryKind.deleteSnapshot: {
        const cut = payload.seq
        if (typeof cut !== 'number') return false
        const S = this.p.config.segmentBytes
        // A copy on backing storage made before its snapshot's marker was freed still holds it,
        // and a rebuild reads archived segments from there (detached and attached again, the
        // archive did not see the local free header): this deletion must stay beside it.
        let at = this.snapshotMarkers.get(cut)
        if (at === undefined) {
          const marker = await this.p.db.entry(cut)
          if (marker !== undefined) {
            if (marker.freed !== true) return false
            at = marker.position
          }
        }
        if (at !== undefined) return !this.p.segments.isArchived(Math.floor(at / S))
        // Not indexed: a rebuild does not index the entries of free runs, so it was freed, in
        // a segment at or before this one that is not known: none of them may be archived.
        for (let id = Math.floor(position / S); id >= 0; id--) if (this.p.segments.isArchived(id)) return false
        return true
      }
      default:
        return false
    }
  }

  /** The marker's length from its own header, or undefined when the header there is another's. */
  private async lengthFromHeader (seq: number, e: EntryRecord): Promise<number | undefined> {
    const S = this.p.config.segmentBytes
    const segment = await this.p.reader.segment(Math.floor(e.position / S))
    const buf = Buffer.alloc(ENTRY_HEADER_BYTES)
    const got = await readUpTo(segment.handle, buf, e.position % S)
    const h = got === ENTRY_HEADER_BYTES ? decodeHeader(buf) : undefined
    return h !== undefined && h.seq === seq && h.kind === e.kind ? entryBytes(h) : undefined
  }
}
