import path from 'node:path'
import { BASELINE_BASE } from './baseline'
import { readUpTo } from './file-layer'
import { segmentFileName } from './format'
import { Mutex } from './mutex'
import { PassFence } from './pass-fence'
import type { LifeCyclePart, StoreParts } from './parts'

/**
 * The life cycle of a segment (004 cl. 2-19): current (appended to) -> active (sealed, holds
 * some block's newest version) -> inactive (holds none; snapshots and restore points may
 * still read it) -> archived (complete on backing storage; the local copy goes) or recycled
 * (nothing in it is needed: deleted). The passes that move segments along it are
 * compaction-pass.ts, baseline-pass.ts and archive-pass.ts; relocation and repair
 * (placement.ts) move copies without changing the state.
 *
 * This holds what every pass shares: the maintenance lock (passes run one at a time), the
 * fence (pass-fence.ts: the one rule of what a pass may touch), and the steps that make
 * bytes unreadable, each of which first waits for the reads in flight (read-epochs.ts).
 */
export class LifeCycle implements LifeCyclePart {
  /** Background passes run one at a time (pass-fence.ts says what they may touch). */
  readonly maintenance = new Mutex()

  constructor (private readonly p: StoreParts) {}

  /**
   * Takes the fence of a background pass: under the append lock, then the index is
   * checkpointed through it, staged changes included, so that it holds every entry and
   * index change the pass may judge.
   */
  async takeFence (): Promise<PassFence> {
    const log = this.p.log
    const fence = await log.lock.run(async () => new PassFence(log.seq, Math.min(log.current.id, this.p.opts.retainFrom?.() ?? Infinity), this.p.config.segmentBytes, this.p.snapshotTable.list().map(s => s.seq)))
    await this.p.index.checkpointThrough(fence.seq)
    // Every pass judges from LevelDB, so LevelDB must hold every index change staged before
    // the fence, also those no log entry follows: checkpointThrough only looks at the log's
    // seq. A baseline merge whose last index commit failed left its rows (block -> baseline
    // slot) staged, the map already on the baseline and no entry after them; the next merge,
    // judging without them, took those versions for still in the log, dropped their slots
    // from baseline.idx and later rewrote them without repointing the old versions (a restore
    // to an earlier point read CORRUPT: simulation seed 127, test/baseline-staged-rows).
    await this.p.index.commitStaged()
    return fence
  }

  /**
   * Seed 004's life cycle (cl. 14-15, 19): a sealed segment none of whose entries holds a
   * block's newest version is inactive, whatever snapshots or restore points still read from
   * it; with backing storage it is archived and its local copy goes (reads fetch it back).
   * Writes and compaction's moves only ever land in the current segment, so a sealed segment
   * that is inactive stays so. Returns how many became inactive.
   */
  markInactive (fence: PassFence): number {
    const S = this.p.config.segmentBytes
    const segments = this.p.segments
    const holdsNewest = new Set<number>()
    this.p.map.forEach((_block, position) => { if (position < BASELINE_BASE) holdsNewest.add(Math.floor(position / S)) })
    let n = 0
    for (const id of segments.ids) {
      if (!fence.mayTouchSegment(id) || segments.stateOf(id) !== 'active' || holdsNewest.has(id)) continue
      segments.setState(id, 'inactive')
      segments.record(id)
      n++
    }
    return n
  }

  /** Puts segment `id` on backing storage unless it is there; returns the bytes put. */
  async ensureArchived (id: number): Promise<number> {
    const segments = this.p.segments
    if (segments.isArchived(id)) {
      // The table says archived once the put landed, before its record is durable: a record
      // whose synced put failed is put again here, before the caller relies on it.
      if (this.unrecordedArchives.has(id)) await this.recordArchived(id)
      return 0
    }
    const segment = await this.p.reader.segment(id)
    const size = await segment.handle.size()
    const data = Buffer.allocUnsafe(size)
    const got = await readUpTo(segment.handle, data, 0)
    await this.p.opts.archive!.put(id, data.subarray(0, got))
    segments.markArchived(id)
    segments.record(id)
    this.unrecordedArchives.add(id)
    await this.recordArchived(id)
    return got
  }

  /**
   * Segments the table says are archived whose record's synced put failed (an index write
   * refused: EIO, no room). The index batch still carries the record, but unsynced: a pass of
   * the same open that took the table's word wrote its free headers, a power loss then lost
   * the record while the pending-headers file redid the headers, and the index kept versions
   * in freed entries of a segment it did not know was archived; the next pass archived that
   * local copy over the whole one, and a rebuild lost those versions (simulation seed 7660033
   * of helper-95's resize draft, test/archive-record-failed.test.ts).
   */
  private readonly unrecordedArchives = new Set<number>()

  /**
   * Puts segment `id`'s record (archived) in the index, synced: durable before anything relies
   * on it (a free header, a punch, a local delete): lost in a power loss, the next archive
   * would put the punched local copy over the whole one.
   */
  private async recordArchived (id: number): Promise<void> {
    await this.p.db.putSegments(new Map([[id, this.p.segments.recordOf(id)]]))
    this.unrecordedArchives.delete(id)
  }

  /**
   * Deletes every local copy of a segment the index now says is archived or recycled: the
   * recorded ones and any stale one (a mirror copy that fell behind), which a later rebuild
   * would otherwise take for part of the log.
   */
  async removeEveryCopy (id: number): Promise<void> {
    await this.p.reads.drain()
    for (const volume of this.p.home.volumes()) {
      let dir: string
      try {
        dir = this.p.home.dirOf(volume)
      } catch { continue }
      await this.p.layer.remove(path.join(dir, segmentFileName(id)))
    }
  }

  /** Removes a file once no read in flight can be using its bytes. */
  async removeAfterReads (file: string): Promise<void> {
    await this.p.reads.drain()
    await this.p.layer.remove(file)
  }
}
