import { EntryKind } from './format'

/**
 * What a background pass may touch, and where it may append (the maintenance reserve, at the
 * end of this file): the one rule, in one place.
 *
 * Passes that change the log behind the writers (compaction, baseline merges, archiving,
 * relocation, mirror repair) run one at a time (the store's maintenance lock), each
 * concurrently with foreground I/O only: writes, reads, snapshots, sync points, flushes and
 * checkpoints. A pass takes a fence under the append lock and checkpoints the index through
 * it, so the index holds every entry up to the fence; then:
 *
 * - it may free, punch, move, archive or delete only entries at or before the fence, in
 *   segments sealed before the fence was taken (the current segment is never touched);
 * - it judges versions only against history at or before the fence: a version is dead only
 *   when its successor is at or before the fence, so a snapshot, sync point or write that
 *   lands while the pass runs can only keep more alive, never less;
 * - it frees a marker only as marker-life.ts allows (a snapshot's only once its deletion
 *   stood at the fence, a deletion's only after its snapshot's), and writes free headers to
 *   every copy the index names, dropping on record first a copy it could not open;
 * - it never makes bytes unreadable (punch, delete, overwrite) while a read that may have
 *   looked them up is in flight: it waits for a read grace period first (ReadEpochs);
 * - the markers it must log before it frees anything (a history marker) may go into the
 *   maintenance reserve that foreground appends leave free at the end of every segment
 *   (MAINTENANCE_RESERVE_BYTES below), so a full pool never refuses the pass that empties it;
 *   should even the reserve be used up, a pass that gives room back (compaction, a baseline
 *   merge) does the part of its work that needs no new marker instead of failing.
 */
export class PassFence {
  constructor (
    /** Sequence number of the last entry the pass may judge. */
    readonly seq: number,
    /** Segments with an id below this were sealed when the fence was taken. */
    readonly sealedBelow: number,
    readonly segmentBytes: number,
    /**
     * The snapshot cuts that stood when the fence was taken. A deletion missing from them was
     * durable by then (a marker holds the append lock until it is synced), so its snapshot's
     * marker may go (marker-life.ts); one deleted after the fence is still listed.
     */
    readonly cuts: readonly number[]
  ) {}

  mayTouchSegment (id: number): boolean {
    return id < this.sealedBelow
  }

  /** Whether the entry with this sequence number, at this log position, may be changed. */
  mayTouchEntry (seq: number, position: number): boolean {
    return seq <= this.seq && this.mayTouchSegment(Math.floor(position / this.segmentBytes))
  }

  /** Whether a snapshot cut at this sequence stood when the fence was taken. */
  heldCut (seq: number): boolean {
    return this.cuts.includes(seq)
  }

  /** Whether a version (by sequence number) is visible to the pass at all. */
  sees (seq: number): boolean {
    return seq <= this.seq
  }
}

/**
 * Bytes at the end of every segment that foreground appends leave free: the maintenance
 * reserve, so that a pass can always log the marker it must write before it frees anything.
 *
 * Compaction and the baseline merge give room back, but first append a history marker
 * (history.ts raiseHorizon: an index rebuilt from the log must know which points were given
 * up). Without a reserve, writes filled the current segment to its last byte, the marker had
 * to roll onto a new segment, and a full pool refused it with NO_SPACE: the one operation
 * that could empty the pool was refused exactly when it was full (simulation seed 7300024,
 * test/attack4-sim-compact-full.test.ts).
 *
 * The reserve lives inside the segment the log already holds (on every copy, when mirrored),
 * not in the pool: nothing the pool does meanwhile (a segment made ahead of its roll, a
 * drain, a mirror repair, a segment brought back from the archive) can take it, and it needs
 * no state: after a crash, the tail of the current segment says how much is left. The cost
 * is 16 KiB of every segment (0.02% of a 64 MiB one). A foreground append that does not fit
 * before the reserve rolls onto a new segment, and gets NO_SPACE (ENOSPC at the FUSE edge)
 * when the pool has no room for one: the reserve stays.
 *
 * - 'foreground' (writes, trims, sync and snapshot markers, compaction's moves, which stop
 *   cleanly on NO_SPACE) may fill a segment up to the reserve;
 * - 'release' (a snapshot deletion, the user's way to give room back in a full pool) may use
 *   the first half of the reserve;
 * - 'maintenance' (a history marker, about 90 bytes) may use all of it: the second half alone
 *   holds about 90 of them, and each needs versions newly freed since the last one. Past the
 *   reserve it rolls like any append (onto any room the pool has left); when the pool has
 *   none, compaction frees only what the current horizon allows and a baseline merge leaves
 *   out the blocks whose slots a new marker would have to free (test/full-pool-baseline).
 */
export const MAINTENANCE_RESERVE_BYTES = 16 * 1024

/** Who an append is for, which says how far into the maintenance reserve it may go. */
export type AppendUse = 'foreground' | 'release' | 'maintenance'

/** The use of a marker entry of this kind (see MAINTENANCE_RESERVE_BYTES). */
export function markerUse (kind: EntryKind): AppendUse {
  if (kind === EntryKind.history) return 'maintenance'
  if (kind === EntryKind.deleteSnapshot) return 'release'
  return 'foreground'
}

/** Where in a segment of `segmentBytes` an append for `use` must end (its entries end at or before it). */
export function appendLimit (use: AppendUse, segmentBytes: number): number {
  if (use === 'maintenance') return segmentBytes
  if (use === 'release') return segmentBytes - MAINTENANCE_RESERVE_BYTES / 2
  return segmentBytes - MAINTENANCE_RESERVE_BYTES
}
