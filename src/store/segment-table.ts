import path from 'node:path'
import { segmentFileName } from './format'
import type { SegmentRecord } from './index-db'
import type { SegmentsPart, StoreParts } from './parts'

export type SegmentState = SegmentRecord['state']

/**
 * Every segment still in the store, with its life-cycle state (004: current, active,
 * inactive, archived; recycled ones are only counted), the volumes its copies should be on
 * (F10: two when mirrored) and whether a complete copy is on backing storage.
 *
 * The in-memory state is the truth while the store is open; the index keeps a record of each
 * segment, and every change of state, copies or archived flag reaches it through `record`,
 * which builds the whole record from this table, so no writer can forget a field (a
 * segment's archived flag was once lost that way).
 */
export class SegmentTable implements SegmentsPart {
  constructor (
    private readonly p: StoreParts,
    /** Ids in log order: sealed ones, then the current one. */
    public ids: number[],
    /** The volumes each segment's copies should be on. */
    private readonly volumes: Map<number, string[]>,
    private readonly states: Map<number, SegmentState>,
    /** Segments with a complete copy on backing storage. */
    private readonly archivedIds: Set<number>,
    /** Segments recycled since the store was made (status). */
    public recycledCount: number,
    /** Segments with freed entries not punched yet (SegmentRecord.unpunched). */
    private readonly unpunchedIds: Set<number> = new Set()
  ) {}

  /** Segment records that must reach the index, synced, before the next flush returns. */
  private readonly mustRecord = new Set<number>()

  /** The volumes of copies dropped (copyDropped) whose drop is not durably recorded yet. */
  private readonly droppedCopies = new Map<number, Set<string>>()

  /** Copies whose drop is durably recorded and whose file is still on its volume (removeStaleCopies). */
  private readonly staleCopies: Array<[id: number, volume: string]> = []

  stateOf (id: number): SegmentState | undefined {
    return this.states.get(id)
  }

  setState (id: number, state: SegmentState): void {
    this.states.set(id, state)
  }

  forgetState (id: number): void {
    this.states.delete(id)
  }

  /** The volumes a segment's copies should be on; undefined once it has no local copy. */
  volumesOf (id: number): string[] | undefined {
    return this.volumes.get(id)
  }

  hasLocal (id: number): boolean {
    return this.volumes.has(id)
  }

  setVolumes (id: number, volumes: string[]): void {
    this.volumes.set(id, volumes)
  }

  forgetVolumes (id: number): void {
    this.volumes.delete(id)
  }

  /** A copy of the volumes of every segment with local copies. */
  placement (): Map<number, string[]> {
    return new Map(this.volumes)
  }

  isArchived (id: number): boolean {
    return this.archivedIds.has(id)
  }

  markArchived (id: number): void {
    this.archivedIds.add(id)
  }

  isUnpunched (id: number): boolean {
    return this.unpunchedIds.has(id)
  }

  /** Says so in the next index batch, when it changes. */
  recordUnpunched (id: number, unpunched: boolean): void {
    if (this.unpunchedIds.has(id) === unpunched) return
    if (unpunched) this.unpunchedIds.add(id)
    else this.unpunchedIds.delete(id)
    this.record(id)
  }

  /**
   * Puts segment `id`'s record, built from the in-memory state alone, into the next index
   * batch.
   */
  record (id: number): void {
    this.p.index.batch.segments.set(id, this.recordOf(id))
  }

  /** Segment `id`'s record as the in-memory state has it now. */
  recordOf (id: number): SegmentRecord {
    const state = this.states.get(id) ?? 'recycled'
    const archived = this.archivedIds.has(id) || undefined
    // Only local copies have bytes to punch: a segment recycled or left only on backing
    // storage has none.
    const unpunched = (this.volumes.has(id) && this.unpunchedIds.has(id)) || undefined
    return { state, volumes: [...(this.volumes.get(id) ?? [])], archived, unpunched }
  }

  /**
   * A copy of a mirrored segment failed a write and was dropped: it no longer holds what the
   * others hold. The record says so before the next flush or checkpoint returns, so a restart
   * never reads the stale copy (it would go back in time) and repair replaces it.
   */
  copyDropped (id: number, volume: string): void {
    const volumes = this.volumes.get(id)
    if (!volumes?.includes(volume)) return
    this.volumes.set(id, volumes.filter(v => v !== volume))
    this.record(id)
    this.mustRecord.add(id)
    this.noteDropped(id, volume)
    // A warning: the store goes on (a command that opened it succeeds), degraded (helper-61).
    this.p.logger.warn({ segment: id, volume }, 'a copy of a mirrored segment fell behind or was lost and was dropped; the store runs degraded until logdisk pool repair')
  }

  /** What a mirrored segment's handle calls when it drops a copy. */
  dropHandler (id: number): (volume: string) => void {
    return volume => this.copyDropped(id, volume)
  }

  /** Makes the records of dropped copies durable (part of every flush and checkpoint). */
  async recordDrops (): Promise<void> {
    // A recording in flight (a checkpoint's, beside a flush) took records off `mustRecord`
    // that this caller must see durable too: wait for it; if it failed, they are back.
    while (this.recording !== undefined) await this.recording.catch(() => undefined)
    if (this.mustRecord.size === 0) return
    const records = new Map<number, SegmentRecord>()
    /** The copies these records leave out: stale once the records are durable. */
    const dropped: Array<[number, string]> = []
    for (const id of this.mustRecord) {
      records.set(id, { state: this.states.get(id) ?? 'active', volumes: [...(this.volumes.get(id) ?? [])], archived: this.archivedIds.has(id) || undefined })
      for (const v of this.droppedCopies.get(id) ?? []) dropped.push([id, v])
      this.droppedCopies.delete(id)
    }
    this.mustRecord.clear()
    const run = (async () => {
      try {
        await this.p.db.putSegments(records)
      } catch (err) {
        for (const id of records.keys()) this.mustRecord.add(id)
        for (const [id, v] of dropped) this.noteDropped(id, v)
        throw err
      }
      // A read-only open removes nothing (the next open that writes does).
      if (this.p.opts.readOnly === undefined) this.staleCopies.push(...dropped)
      if (this.staleCopies.length > 0) void this.p.lifeCycle.maintenance.run(() => this.removeStaleCopies()).catch(() => undefined)
    })()
    this.recording = run
    try {
      await run
    } finally {
      if (this.recording === run) this.recording = undefined
    }
  }

  /** Remembers a dropped copy until a recordDrops makes its drop durable. */
  private noteDropped (id: number, volume: string): void {
    const volumes = this.droppedCopies.get(id)
    if (volumes) volumes.add(volume)
    else this.droppedCopies.set(id, new Set([volume]))
  }

  /** The recordDrops write in flight. */
  private recording: Promise<void> | undefined

  /**
   * Removes the files of copies whose drop is durably recorded (queued by recordDrops under
   * the maintenance lock). Left on its volume, a dropped copy waits for the next open that
   * reads the index (store-open.ts removeUnnamedCopies); if the index is lost before that, a
   * full rebuild has no record and judges copies by their bytes alone, and a copy that missed
   * only writes in place (compaction's free headers: same log end) or whose disk lost the
   * pages of a failed write-back (same bytes through the page cache) looks as current as the
   * good one: the rebuild made the good copy match it, bringing back freed entries (a deleted
   * snapshot). So the stale file goes at run time, as soon as the record allows it.
   *
   * Under the maintenance lock, because the passes that put a new copy where a dropped one
   * was (a mirror repair, a move, a bring-back: each writes a temporary file, renames it over
   * the stale one and then records it) run under it: a removal between their rename and their
   * record would delete the new copy. A copy named again since it was dropped is that new
   * copy, and stays. Reads in flight end first (removeAfterReads), though none uses a dropped
   * copy (the mirrored handle left it, and closes it once its operations are done; an open
   * file descriptor keeps reading an unlinked file anyway).
   *
   * Best effort: the removal of a copy on a failing volume may fail too; the copy then stays
   * for the next open (or `pool repair`) to remove, and is not taken off the pool's
   * accounting. A crash before the directory's fsync may bring the name back: the same. A
   * store being abandoned (kill -9 in tests) leaves them to the next open.
   */
  private async removeStaleCopies (): Promise<void> {
    const { home, layer, logger, state } = this.p
    const dirs = new Set<string>()
    while (this.staleCopies.length > 0 && !state.closed) {
      const [id, volume] = this.staleCopies.shift()!
      if (this.volumes.get(id)?.includes(volume)) continue
      let dir: string
      try {
        dir = home.dirOf(volume)
        await this.p.lifeCycle.removeAfterReads(path.join(dir, segmentFileName(id)))
      } catch (err) {
        logger.warn({ segment: id, volume, err: (err as Error).message }, 'could not remove a dropped mirror copy; the next open removes it')
        continue
      }
      logger.warn({ segment: id, volume }, 'removed a dropped mirror copy (stale)')
      home.vacated(id, [volume])
      dirs.add(dir)
    }
    for (const dir of dirs) {
      await layer.syncDir(dir).catch(err => logger.warn({ dir, err: (err as Error).message }, 'could not fsync a directory after removing a dropped mirror copy; the next open removes it if it comes back'))
    }
  }

  /** How many segments are in each state (status). */
  countByState (): Record<'current' | 'active' | 'inactive' | 'archived' | 'recycled', number> {
    const segments = { current: 0, active: 0, inactive: 0, archived: 0, recycled: this.recycledCount }
    for (const id of this.ids) segments[this.states.get(id) ?? 'active']++
    return segments
  }
}
