import path from 'node:path'
import { segmentFileName } from './format'
import { Segment } from './segment'
import type { StoreParts } from './parts'

/**
 * The next segment, made ahead of the roll that needs it.
 *
 * Making a segment (placing it, creating the file, writing and fdatasyncing its header,
 * fsyncing the directory) took 50-220 ms per 64 MiB segment under sequential writes on the
 * 2-core VM, and a roll does it under the append lock: every write waited, once per 64 writes
 * of 1 MiB, which is the whole of the sequential-write p99. Made here in the background
 * while the current segment still fills, the roll only swaps it in.
 *
 * A segment of one copy is made unsynced (Segment.create with `durable: false`): even in
 * the background, its header's fdatasync and the directory's fsync queued behind the
 * writeback of the segment filling, and rolls still waited 11-105 ms for them. Its first
 * sync, once it is current and a flush or checkpoint syncs the log, makes header and name
 * durable before anything durable names it (the index records it only in a checkpoint,
 * after that sync).
 *
 * What it changes on disk is what a crash right after a roll already leaves: a segment file
 * past the current one holding no entry and a header, or not even that. Recovery takes one
 * with a valid header as the current segment (the one before it is sealed where it ends) and
 * removes one whose header is unreadable (recovery.ts); nothing in the index names it until
 * the roll records it. A clean close removes it.
 *
 * Its placement is the pool's choice when it was made: the roll uses it only if the home
 * would still choose those volumes (`stillSuits`: no drain of one began, the mirror count did
 * not change); a drain moving its id (Store.relocateSegment) removes it instead of moving.
 * Removal and making a segment of the same id never overlap: `take` and `make` wait for a
 * removal in flight, so a roll can never create a file that a removal then unlinks.
 */
export class NextSegment {
  private made: { id: number, segment: Promise<Segment | undefined> } | undefined
  /** The last removal (a discarded segment's files); making or taking waits for it. */
  private removal: Promise<void> = Promise.resolve()

  constructor (private readonly p: StoreParts) {}

  /** Starts making segment `id` in the background, unless one is made or being made already. */
  prepare (id: number): void {
    if (this.made !== undefined || this.p.opts.readOnly) return
    this.made = { id, segment: this.make(id) }
  }

  private async make (id: number): Promise<Segment | undefined> {
    const { home, layer, geometry, logger, segments } = this.p
    await this.removal
    let volumes: string[]
    try {
      volumes = await home.place(id, { ahead: true })
    } catch {
      return undefined // a full pool, or a drain running: the roll places it again
    }
    try {
      // Mirrored segments stay synced at creation: a power loss could otherwise keep the header
      // of one copy and not the other's, and recovery would open the segment on one copy and
      // report the other damaged (repairable, but an alarm after a power loss that lost nothing).
      return await Segment.create(layer, home, volumes, id, geometry, logger, segments.dropHandler(id), volumes.length > 1)
    } catch (err) {
      home.vacated(id, volumes)
      logger.warn({ segment: id, err: (err as Error).message }, 'could not make the next segment ahead; the roll makes it')
      return undefined
    }
  }

  /**
   * Segment `id` if it was made ahead and its volumes still suit; otherwise undefined and the
   * caller makes it (anything made ahead for another id or on volumes that no longer suit is
   * removed first).
   */
  async take (id: number): Promise<Segment | undefined> {
    const made = this.made
    this.made = undefined
    if (made !== undefined) {
      const segment = await made.segment
      if (segment !== undefined && made.id === id && this.p.home.stillSuits(segment.volumes)) return segment
      if (segment !== undefined) this.remove(segment)
    }
    await this.removal
    return undefined
  }

  /**
   * Removes the segment made ahead if its id is `id` (any id when undefined): a drain moving
   * it, or the store closing. Returns whether there was one.
   */
  async discard (id?: number): Promise<boolean> {
    const made = this.made
    if (made === undefined || (id !== undefined && made.id !== id)) return false
    this.made = undefined
    // The removal is registered now, before the segment is made: a roll meanwhile finds no
    // segment made ahead and makes the same file itself, so it must wait for this removal
    // (take waits for `removal`), not create the file under a making-ahead still running
    // (its truncate(0) would empty the new current segment, and the unlink take it away).
    this.removal = this.removal.then(async () => {
      const segment = await made.segment
      if (segment !== undefined) await this.removeFiles(segment)
    })
    await this.removal
    return true
  }

  /** Closes its handle and leaves its file (the store is abandoned, as by kill -9). */
  async drop (): Promise<void> {
    const made = this.made
    this.made = undefined
    const segment = await made?.segment
    await segment?.close().catch(() => undefined)
  }

  private remove (segment: Segment): void {
    this.removal = this.removal.then(() => this.removeFiles(segment))
  }

  private async removeFiles (segment: Segment): Promise<void> {
    const { home, layer } = this.p
    await segment.close().catch(() => undefined)
    // Not synced: a file whose removal a crash undoes is an empty segment past the log's end,
    // which recovery takes as the current one (or, under a later id's copy, as a stale copy).
    // A drain that removed it syncs the volume's directory before it releases the volume
    // (Store.syncVolume): not on a spare volume.
    for (const volume of segment.volumes) await layer.remove(path.join(home.dirOf(volume), segmentFileName(segment.id))).catch(() => undefined)
    home.vacated(segment.id, segment.volumes)
  }
}
