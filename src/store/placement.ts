import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { parseSegmentFileName, segmentFileName } from './format'
import type { PlacementPart, StoreParts } from './parts'
import type { FileHandle } from './file-layer'
import { checkedEnd, intactCopies } from './scanner'
import { Segment } from './segment'
import { healCopies, type CopyToHeal } from './heal-copies'

/**
 * Where the copies of each segment live (F6, F10): its home volume in the pool (or the
 * store's own segments directory), a second copy on another volume when mirrored. Moves a
 * sealed segment between volumes (a pool drain, seed 002) and restores lost mirror copies.
 * Each runs under the maintenance lock; a copy is complete and durable before the index
 * names it, and the index names the new place, durably, before an old copy goes, so a crash
 * at any step leaves a complete copy that the index or the volume listing finds.
 */
export class Placement implements PlacementPart {
  constructor (private readonly p: StoreParts) {}

  /** Moves sealed segment `id` from volume `from` to `to`: copy, fsync, switch the index, delete. */
  async relocate (id: number, from: string, to: string): Promise<void> {
    const { home, layer, segments } = this.p
    // The segment made ahead of its roll holds nothing: a drain removes it instead of moving it.
    if (await this.p.log.discardNext(id)) return
    // No local copy any more: a compaction recycled it (or archiving took it away) since the
    // caller listed it. Nothing is left to move (a drain beside a compaction failed here with
    // NOT_FOUND: found by a hostile test).
    if (segments.volumesOf(id) === undefined) return
    await this.p.log.seal(id)
    const volumes = segments.volumesOf(id)
    if (volumes && !volumes.includes(from) && await this.hasCopy(id, volumes)) {
      // A copy the index no longer names: a move that crashed after switching the index.
      await layer.remove(path.join(home.dirOf(from), segmentFileName(id)))
      await layer.syncDir(home.dirOf(from))
      home.vacated(id, [from])
      return
    }
    if (!volumes?.includes(from)) throw new LogdiskError('NOT_FOUND', `segment ${id} has no copy on volume ${from}`)
    // The caller chose `to` before this pass held the maintenance lock: a mirror repair that
    // held it meanwhile may have put a copy there. Moving onto it anyway recorded one file as
    // two copies ([v, v]) and deleted the other copy; a later failed write to "one" of them
    // dropped both (simulation seed 12346031: a segment of acknowledged writes lost). The
    // caller chooses again (Pool.drain does).
    if (volumes.includes(to)) throw new LogdiskError('BUSY', `segment ${id} already has a copy on volume ${to} (made since the move was chosen); choose another volume`)
    await this.copySegmentFile(id, await this.moveSource(id, from, volumes), to)
    home.occupied(id, [to])
    await this.recordVolumes(id, volumes.map(v => v === from ? to : v))
    this.p.reader.forgetHandle(id)
    // The pool's count follows the index: vacated only after the delete, an old copy that could
    // not be deleted (its directory immutable) stayed counted there, and every later drain in
    // the daemon looked for a volume without a copy of it ("already holds a copy", mirror=1:
    // helper-75's D5). The drain removes what is left before it releases the volume
    // (removeUnnamedOn), or the next open does.
    home.vacated(id, [from])
    await this.p.lifeCycle.removeAfterReads(path.join(home.dirOf(from), segmentFileName(id)))
    // Not ignored: a volume released while its deletes may not be durable could come back
    // holding copies (the drain fails instead; the next one syncs the directory again).
    await layer.syncDir(home.dirOf(from))
  }

  /** Removes the copies on `volume` that the index does not name (a drain, before it releases the volume); throws if one stays. */
  async removeUnnamedOn (volume: string): Promise<void> {
    await this.removeStaleCopies([volume], true)
    await this.p.log.lock.run(() => this.removeUnnamedAhead(volume))
  }

  /**
   * Removes the files on `volume` (a volume being drained) of segments at or past the current
   * one that the index does not name there: a segment made ahead of its roll whose removal
   * failed when the drain began (its directory not writable then; NextSegment removes it best
   * effort) and that was never used, or was made again elsewhere under the same id. The
   * drain's sweep skipped these ids (removeStaleCopies: a segment still being made), so the
   * volume was released, and dropped from pool.json, with an empty segment file of the store
   * on it (helpers 75 and 79). Under the append lock: no roll makes one there meanwhile, and
   * no segment is made ahead while a drain runs (Pool.place refuses `ahead`). Never read (no
   * index entry points at it): removed at once. Throws if one stays.
   */
  private async removeUnnamedAhead (volume: string): Promise<void> {
    const { home, layer, segments, log } = this.p
    const dir = home.dirOf(volume)
    let removed = false
    for (const name of await layer.list(dir).catch(() => [] as string[])) {
      const id = parseSegmentFileName(name)
      if (id === undefined || id < log.current.id || (segments.volumesOf(id) ?? []).includes(volume)) continue
      if (id === log.current.id && log.current.volumes.includes(volume)) continue
      await layer.remove(path.join(dir, name))
      this.p.logger.warn({ segment: id, volume }, 'removed a segment file past the log that the index does not name (made ahead of a roll, its removal failed before)')
      home.vacated(id, [volume])
      removed = true
    }
    if (removed) await layer.syncDir(dir)
  }

  /**
   * Drops the copy of segment `id` on volume `from` when the other copies are at least
   * `copies` and intact: the index stops naming it, durably, then the file goes (as a move's
   * old copy does). Returns false, with nothing changed, when they are fewer (or the index
   * names no copy there): the caller moves it. A drain after mirror was lowered moved every
   * copy, so going from two mirrored volumes to one needed a third one first (helper-75's D4).
   */
  async dropCopy (id: number, from: string, copies: number, opts: { gone?: boolean } = {}): Promise<boolean> {
    const { home, layer, segments } = this.p
    if (!(segments.volumesOf(id) ?? []).includes(from)) return false
    await this.p.log.seal(id)
    const volumes = segments.volumesOf(id) ?? []
    if (!volumes.includes(from)) return false
    const others = new Set(volumes.filter(v => v !== from))
    // Counted by what is there and passes its checksums: dropping the one intact copy beside
    // a damaged one would lose the blocks only it holds.
    const { present, allDamaged, verified } = await this.judgeCopies(id, volumes.length, true)
    if (allDamaged || present.filter(v => others.has(v)).length < Math.max(copies, 1)) return false
    // A copy on a volume whose directory is gone (`gone`: pool remove of it) is forgotten only
    // while the others pass their checksums: it may come back holding what they lack.
    if (opts.gone === true && !verified) return false
    await this.recordVolumes(id, volumes.filter(v => v !== from))
    // The pool's count follows the index, as after a move (relocate): vacated only after the
    // delete, a copy whose delete failed (its directory not writable) stayed counted there, and
    // the next drain, the directory writable again, found every other volume holding a copy
    // ("add a volume first", mirror=1). The drain removes what is left before it releases the
    // volume (removeUnnamedOn), or the next open does.
    home.vacated(id, [from])
    await this.p.lifeCycle.removeAfterReads(path.join(home.dirOf(from), segmentFileName(id)))
    try {
      await layer.syncDir(home.dirOf(from))
    } catch (err) {
      if (!isLogdiskError(err, 'NOT_FOUND')) throw err // its directory gone: nothing of it to sync
    }
    this.p.logger.info({ segment: id, volume: from, left: [...others] }, 'dropped a copy beyond what mirror asks instead of moving it')
    return true
  }

  /**
   * The copy a move of segment `id` off volume `from` copies: that one, unless the segment is
   * mirrored and that copy fails its checksums (or was cut short) while another is intact.
   * The drain moved a damaged copy as it was, so the store left the volume with the damage
   * (verify named it on its new volume, pool repair had to replace it).
   */
  private async moveSource (id: number, from: string, volumes: string[]): Promise<string> {
    if (new Set(volumes).size < 2) return from // one copy: nothing to choose from
    let judged = await this.judgeCopies(id, volumes.length, true)
    if (judged.allDamaged) {
      const { unhealable } = await this.heal(id, judged.present)
      judged = await this.judgeCopies(id, volumes.length, true)
      if (judged.allDamaged) this.p.logger.warn({ segment: id, volume: from, unhealable }, 'moving a copy that fails its checksums in blocks no copy holds intact: logdisk verify names them')
    }
    const { present } = judged
    if (present.length === 0 || present.includes(from)) return from
    this.p.logger.warn({ segment: id, volume: from, from: present[0] }, 'moving a copy that fails its checksums: copied from an intact one instead')
    return present[0]
  }

  /**
   * Brings archived segment `id` back from backing storage into the pool (a store recovered
   * from a replica fetches the segments it left there in the background: src/replicate/
   * hydrate.ts). The copy is written under a temporary name, fsynced and renamed on every
   * volume the home places it on, then the index says durably that the segment is local
   * again ('active': the next pass judges whether it holds anything live; its archived copy
   * stays, so what it may punch is still on backing storage). A crash before the record
   * leaves a copy the next open removes (store-open.ts). Returns the bytes brought back, 0
   * when the segment is not archived or already local.
   */
  async bringBack (id: number): Promise<number> {
    const { home, layer, segments } = this.p
    const link = this.p.opts.archive
    if (segments.stateOf(id) !== 'archived' || segments.hasLocal(id) || !link) return 0
    const data = await link.get(id)
    const name = segmentFileName(id)
    const volumes = await home.place(id)
    const written: string[] = []
    try {
      for (const v of volumes) {
        // Removed again on failure: only a copy this call made. A file of that name may be
        // there already: an archive pass whose index commit failed has the segment 'archived'
        // in memory while its local copy, which the index on disk still names, stays. A failed
        // bring-back removed that copy (simulation seed 998147: a restore then met ENOENT).
        const there = (await layer.list(home.dirOf(v)).catch(() => [] as string[])).includes(name)
        await this.writeSegmentCopy(id, v, h => h.writev([data], 0))
        if (!there) written.push(v)
      }
      // Checked as the store will open it (header, identity) before anything points at it.
      await (await Segment.open(layer, home, volumes, id, this.p.geometry)).close()
    } catch (err) {
      for (const v of written) await layer.remove(path.join(home.dirOf(v), name)).catch(() => undefined)
      home.vacated(id, volumes)
      throw err
    }
    if (segments.stateOf(id) !== 'archived') throw new LogdiskError('BUSY', `segment ${id} changed state while it was brought back`)
    segments.setVolumes(id, volumes)
    segments.setState(id, 'active')
    this.p.reader.forgetHandle(id) // the next read opens the local copy
    segments.record(id)
    await this.p.index.commitDurably()
    return data.length
  }

  /**
   * Restores lost copies (F10): for every segment whose copies are fewer than `copies` or
   * missing from a volume the index names, copies a surviving one onto `place`'s choice.
   * Returns how many copies were made.
   */
  async repair (copies: number, place: (id: number, exclude: string[]) => Promise<string>): Promise<{ made: number, staleLeft: string[], healed: number, damaged: number[], unplaced: number[], forgotten: number }> {
    const { home, segments, log } = this.p
    await log.lock.run(() => log.syncAll()) // no sealed segment left unsynced to move
    let made = 0
    let forgotten = 0
    let healed = 0
    const damaged: number[] = []
    const unplaced: number[] = []
    for (const id of [...segments.ids]) {
      this.p.state.assertNotClosing()
      // The current segment's copies are judged by their headers only (appends go on in it);
      // a sealed one's by their data too (judgeCopies).
      const checkData = id !== log.current.id
      let first = await this.judgeCopies(id, copies, checkData)
      if (first.allDamaged) {
        // Every copy fails somewhere: merged block by block where another copy is intact.
        await log.seal(id)
        const r = await this.heal(id, first.present)
        healed += r.healed
        first = await this.judgeCopies(id, copies, true)
        if (first.allDamaged) damaged.push(id)
      }
      if (!first.lacking) continue
      // Sealed and synced from here on, so no append or sync can drop a copy of it any more.
      // Until now one could (a failed write to the current segment, a failed fdatasync), and
      // the judgement above may name a copy that fell behind meanwhile: judged again from the
      // record as it is now. Copying from that stale copy (over the up-to-date one, when it
      // failed its check once) lost acknowledged writes (simulation seed 13200120).
      await log.seal(id)
      const { want, present, lacking, verified, found } = await this.judgeCopies(id, copies, true)
      if (!lacking) continue
      const next = [...present]
      while (next.length < Math.max(copies, 1)) {
        let to: string
        try {
          to = await place(id, next) // reserves the copy's place
        } catch (err) {
          // No room for this one: the others are still repaired, and this one is said (it
          // stopped the whole repair at the first such segment: helper-64).
          if (!isLogdiskError(err, 'NO_SPACE')) throw err
          unplaced.push(id)
          break
        }
        try {
          await this.copySegmentFile(id, present[0], to)
        } catch (err) {
          home.vacated(id, [to])
          throw err
        }
        next.push(to)
        made++
      }
      // Nothing placed: its record stays as it was, unless the copies it names that are gone (a
      // volume's directory gone, a file deleted: not there to open) are beyond what mirror asks
      // (lowered since) and the others pass their checksums. Those are forgotten: the record
      // kept naming them, repair said nothing of them, and `pool remove` of a volume gone was
      // refused for good, asking for this repair (helpers 75 and 79). A copy that is there but
      // fails its checksums stays named (it may hold entries the other lacks), as does one gone
      // while no other is verified intact (its volume may come back with what they lack).
      const lost = want.filter(v => !next.includes(v))
      if (next.length === present.length && !(verified && present.length >= Math.max(copies, 1) && lost.every(v => !found.includes(v)))) continue
      home.vacated(id, lost)
      await this.recordVolumes(id, next)
      this.p.reader.forgetHandle(id)
      if (next.length === present.length) {
        forgotten += lost.length
        this.p.logger.warn({ segment: id, lost, left: next }, 'forgot lost copies beyond what mirror asks: the others pass their checksums')
      }
    }
    return { made, staleLeft: await this.removeStaleCopies(), healed, damaged, unplaced, forgotten }
  }

  /**
   * The copies of segment `id` its record names (`want`), those whose header checks out
   * (`present`: a power loss in a roll can leave an empty one), and whether copies are
   * `lacking` (fewer than `copies` present, or one named is not; never when none is present:
   * there is nothing to copy from, and verify reports it). Only copies the record names now
   * count: a copy the store dropped is stale, whatever its header says.
   *
   * `checkData`, with two copies or more: a copy whose entries fail their checksums, or end
   * before another's (truncated), counts as lost too, while another passes, so repair
   * replaces it from that one (reads go around a damaged copy and tell the user to run pool
   * repair, which made no copy and left the store one bit flip from losing data: found by a
   * hostile test, 2026-12-06). This reads every copy of every sealed mirrored segment.
   * `allDamaged`: two copies or more were checked and none passes (heal). `verified`: the
   * copies `present` names were checked and pass (with `checkData` and two copies named or more);
   * `found`: the copies whose header checks out, intact or not.
   */
  private async judgeCopies (id: number, copies: number, checkData = false): Promise<{ want: string[], present: string[], lacking: boolean, allDamaged: boolean, verified: boolean, found: string[] }> {
    const recorded = this.p.segments.volumesOf(id) ?? []
    // A volume named twice is one copy (a move onto a volume that already held one recorded
    // that before it was refused: Placement.relocate).
    const want = [...new Set(recorded)]
    const checking = checkData && want.length > 1 // one copy: nothing to choose from
    let present: string[] = []
    const ends: Array<number | undefined> = []
    for (const v of want) {
      try {
        const segment = await Segment.open(this.p.layer, this.p.home, [v], id, this.p.geometry)
        try {
          present.push(v)
          if (checking) ends.push(await checkedEnd(segment.handle, this.p.geometry.blockBytes))
        } finally {
          await segment.close()
        }
      } catch { /* lost */ }
    }
    const found = [...present]
    const intact = checking ? intactCopies(present, ends) : []
    if (intact.length > 0) present = intact
    const whole = present.length >= Math.max(copies, want.length) && present.length === recorded.length
    return { want, present, lacking: present.length > 0 && !whole, allDamaged: checking && present.length > 1 && intact.length === 0, verified: intact.length > 0, found }
  }

  /**
   * Heals the copies of sealed segment `id` on `volumes` block by block from each other
   * (heal-copies.ts): every copy fails its checksums somewhere. Readers open the copies again.
   */
  private async heal (id: number, volumes: string[]): Promise<{ healed: number, unhealable: number }> {
    const copies: CopyToHeal[] = []
    try {
      for (const volume of volumes) {
        try {
          copies.push({ volume, handle: await this.p.layer.open(path.join(this.p.home.dirOf(volume), segmentFileName(id)), false) })
        } catch { /* lost: judged so already */ }
      }
      const r = await healCopies(copies, this.p.geometry.blockBytes)
      if (r.healed > 0) this.p.logger.info({ segment: id, healed: r.healed }, 'healed blocks that failed their checksums in one copy from another copy')
      return r
    } finally {
      for (const c of copies) await c.handle.close().catch(() => undefined)
      this.p.reader.forgetHandle(id)
    }
  }

  /** Copies sealed segment `id` from volume `from` to volume `to` (writeSegmentCopy). */
  private async copySegmentFile (id: number, from: string, to: string): Promise<void> {
    const name = segmentFileName(id)
    const src = await this.p.layer.open(path.join(this.p.home.dirOf(from), name), false)
    try {
      await this.writeSegmentCopy(id, to, async dst => {
        const size = await src.size()
        const buf = Buffer.allocUnsafe(4 * 1024 * 1024)
        for (let at = 0; at < size;) {
          const n = await src.read(buf, 0, Math.min(buf.length, size - at), at)
          if (n === 0) throw new LogdiskError('IO', `segment ${name} on ${from} ended early while copying`)
          await dst.writev([buf.subarray(0, n)], at)
          at += n
        }
      })
    } finally {
      await src.close()
    }
  }

  /**
   * Writes a copy of segment `id` onto `volume`: under a temporary name, filled by `fill`,
   * fsynced, renamed, directory fsynced, so the copy is complete before anything points at it.
   */
  private async writeSegmentCopy (id: number, volume: string, fill: (h: FileHandle) => Promise<unknown>): Promise<void> {
    const { home, layer } = this.p
    const name = segmentFileName(id)
    const dir = home.dirOf(volume)
    await layer.mkdirp(dir)
    const tmp = path.join(dir, `${name}.copy`)
    const h = await layer.open(tmp, true)
    try {
      await h.truncate(0)
      await fill(h)
      await h.datasync()
    } catch (err) {
      // A copy that could not be made whole (its volume filled) goes, rather than stay for good
      // beside the segment files (nothing names it; found by a hostile test).
      await h.close().catch(() => undefined)
      await layer.remove(tmp).catch(() => undefined)
      throw err
    }
    await h.close()
    await layer.rename(tmp, path.join(dir, name))
    await layer.syncDir(dir)
  }

  /** Makes the index say where a segment's copies are, durably, before old copies go. */
  private async recordVolumes (id: number, volumes: string[]): Promise<void> {
    this.p.segments.setVolumes(id, volumes)
    this.p.reader.forgetHandle(id) // the next use opens the copies named now, even if the commit fails
    this.p.segments.record(id)
    await this.p.index.commitDurably()
  }

  /** Whether a copy of segment `id` is on one of `volumes`. */
  private async hasCopy (id: number, volumes: string[]): Promise<boolean> {
    for (const v of volumes) {
      try {
        await (await this.p.layer.open(path.join(this.p.home.dirOf(v), segmentFileName(id)), false)).close()
        return true
      } catch { /* not there */ }
    }
    return false
  }

  /**
   * Deletes copies of sealed segments that the index does not name: copies that fell behind
   * (a failed write) or that a crash left behind a move. The index's record is durable
   * before this runs, so what goes is never the copy a restart would read. A copy on a volume
   * that is read-only now stays (the next repair on a writable volume removes it): returned,
   * one file each. Repair failed on it, after making every copy it had to (D7).
   */
  private async removeStaleCopies (volumes = this.p.home.volumes(), strict = false): Promise<string[]> {
    const { home, layer, segments } = this.p
    const left: string[] = []
    for (const volume of volumes) {
      const dir = home.dirOf(volume)
      let removed = false
      for (const name of await layer.list(dir).catch(() => [] as string[])) {
        const id = parseSegmentFileName(name)
        if (id === undefined || id >= this.p.log.current.id || (segments.volumesOf(id) ?? []).includes(volume)) continue
        if (!segments.ids.includes(id) && !segments.isArchived(id)) continue // not ours to judge
        try {
          await this.p.lifeCycle.removeAfterReads(path.join(dir, name))
        } catch (err) {
          if (strict || !isLogdiskError(err, 'READ_ONLY')) throw err
          left.push(path.join(dir, name))
          continue
        }
        this.p.logger.warn({ segment: id, volume }, 'removed a stale copy the index does not name')
        home.vacated(id, [volume])
        removed = true
      }
      if (removed) await layer.syncDir(dir)
    }
    return left
  }
}
