/**
 * What a background pass may touch: the one rule, in one place.
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
 * - it never makes bytes unreadable (punch, delete, overwrite) while a read that may have
 *   looked them up is in flight: it waits for a read grace period first (ReadEpochs).
 */
export class PassFence {
  constructor (
    /** Sequence number of the last entry the pass may judge. */
    readonly seq: number,
    /** Segments with an id below this were sealed when the fence was taken. */
    readonly sealedBelow: number,
    readonly segmentBytes: number
  ) {}

  mayTouchSegment (id: number): boolean {
    return id < this.sealedBelow
  }

  /** Whether the entry with this sequence number, at this log position, may be changed. */
  mayTouchEntry (seq: number, position: number): boolean {
    return seq <= this.seq && this.mayTouchSegment(Math.floor(position / this.segmentBytes))
  }

  /** Whether a version (by sequence number) is visible to the pass at all. */
  sees (seq: number): boolean {
    return seq <= this.seq
  }
}
