import type { Store } from '../store'
import { isLogdiskError } from '../errors'
import { deleteSnapshotRespectingClones } from '../clone/delete-guard'
import type { Logger } from '../store/logger'
import { locationOf } from '../store/identity'
import { storeArchiveLink } from '../archive/owned-link'
import { parseTarget } from '../archive/parse-target'
import type { ReplicationManager } from '../replicate/manager'
import type { ArchiveLink } from '../store/archive-link'
import { AUTO_PREFIX, historyKeepMs, parseDuration, readPolicy, volumeIdPolicy, type Policy } from './policy'

/**
 * What the engine drives in a store's pool (src/pool's Pool implements it): the policy
 * engine sits beside the pool, not above it, so it sees only these two methods.
 */
export interface PoolPolicyTarget {
  /** Takes the policy read on this tick (thresholds, mirror copies, ask or act). */
  setPolicy (policy: Policy): void
  /** Grows or shrinks the pool as the policy says. */
  tick (): Promise<void>
  /** What the assigned volumes hold and may hold, in bytes (the numbers behind pool list's use). */
  use (): { usedBytes: number, capacityBytes: number }
}

/** Automatic snapshots are named with this prefix; retention only ever deletes those. */
export { AUTO_PREFIX }

/** Growth of the pool (a fraction of its capacity, at least two segments) after which compact.at compacts again. */
const PRESSURE_STEP = 0.02
/** How long a compaction for a write that found no room and freed nothing is not run again for the same pool use. */
const NO_SPACE_RETRY_MS = 10_000

export type PolicyEvent = 'sync' | 'unmount' | 'snapshot'

/**
 * Applies a store's policies (000 cl. 3-6; 001 set policy): temporal (snapshot.every,
 * snapshot.keep, baseline.olderThan, compact.every, archive.after), status (pool.*,
 * segments.workingSet) and event (on.sync, on.unmount, on.snapshot). The mount daemon calls
 * `tick` on a timer and `onEvent` after the events; tests give it a fake clock. Policies are
 * re-read on every tick, so `policy set` takes effect on a mounted store.
 */
export class PolicyEngine {
  private lastSnapshotMs: number
  private lastCompactMs: number
  /** The pool's used bytes after the last compaction this engine ran (compact.at's step counts from it). */
  private usedAfterCompact: number | undefined
  private baselineCut = 0
  private archiveTarget: string | undefined
  private running: Promise<void> | undefined
  /** The compaction a write that found no room waits for (relieveNoSpace). */
  private relieving: Promise<boolean> | undefined
  /** The last such compaction that freed nothing: the pool's use then, and when. */
  private fruitless: { used: number | undefined, atMs: number } | undefined
  /** Snapshots retention would delete but keeps (clones read them): warned once each. */
  private readonly keptWarned = new Set<string>()

  constructor (
    private readonly store: Store,
    private readonly pool: PoolPolicyTarget | undefined,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
    private readonly policyOf: () => Policy = () => readPolicy(store.dir),
    /** Whether a snapshot's image is open (loop-mounted): retention leaves those alone. */
    private readonly inUse: (name: string) => boolean = () => false,
    /** Continuous replication (replicate.*), started, changed and stopped as the policy says. */
    private readonly replication?: ReplicationManager,
    /**
     * The store's archive link for an archive.target ('' for none): the composition root's,
     * so that what it puts in front (a lazily recovered store's replica, src/app/open.ts)
     * stays when the policy changes the link.
     */
    private readonly linkFor: (target: string) => ArchiveLink | undefined = target => target === '' ? undefined : storeArchiveLink(parseTarget(target), store.config, locationOf(store.dir))
  ) {
    this.lastSnapshotMs = now()
    this.lastCompactMs = now()
  }

  /** Runs what is due; one tick at a time (a tick still running makes the next one wait). */
  tick (): Promise<void> {
    if (this.running) return this.running
    this.running = this.work().finally(() => { this.running = undefined })
    return this.running
  }

  /**
   * Applies policy.json's settings at once (the control socket's `policy` op: `policy set`
   * waits for it, so a change is in force when the command returns). Errors of replication
   * (a lease another host holds) are thrown here, where the tick only logs them.
   */
  async reload (): Promise<void> {
    await this.applySettings(this.policyOf(), true)
  }

  /** The settings part of a tick: thresholds, history window, replication, archive target. */
  private async applySettings (p: Policy, strict = false): Promise<void> {
    this.pool?.setPolicy(p)
    this.store.setHistoryKeepMs(historyKeepMs(p))
    await this.replication?.apply(p, strict)
    if (p['archive.target'] !== this.archiveTarget) {
      this.archiveTarget = p['archive.target']
      await this.store.attachArchive(this.linkFor(this.archiveTarget))
    }
  }

  private async work (): Promise<void> {
    const p = this.policyOf()
    await this.applySettings(p)
    await this.pool?.tick()
    const now = this.now()
    const every = parseDuration(p['snapshot.every']) ?? 0
    if (every > 0 && now - this.lastSnapshotMs >= every) {
      this.lastSnapshotMs = now
      await this.autoSnapshot(p, 'snapshot.every')
    }
    await this.retain(p)
    const olderThan = parseDuration(p['baseline.olderThan']) ?? 0
    if (olderThan > 0) {
      const oldest = this.store.snapshots()[0]
      // Merge when the oldest kept snapshot is older than the limit and brings something new.
      if (oldest && now - oldest.timeMs >= olderThan && oldest.seq > this.baselineCut) {
        const r = await this.store.compactIntoBaseline()
        this.baselineCut = r.cutSeq
        this.log.info({ cutSeq: r.cutSeq, blocks: r.blocks }, `baseline.olderThan=${p['baseline.olderThan']}: merged everything up to snapshot ${oldest.name} into the baseline`)
      }
    }
    const compactEvery = parseDuration(p['compact.every']) ?? 0
    if (compactEvery > 0 && now - this.lastCompactMs >= compactEvery) {
      this.lastCompactMs = now
      await this.compactAndArchive(p)
    } else {
      const usedBytes = this.usedWhenShort(p)
      if (usedBytes === undefined) return
      // Counted from here too: a compaction that fails is tried again a step later, not every tick.
      this.usedAfterCompact = usedBytes
      this.log.info({ usedBytes }, `compact.at=${p['compact.at']}: the pool is that full; compacting now`)
      await this.compactAndArchive(p)
    }
  }

  /**
   * compact.at: the pool is at least this full and grew by a step since the last compaction.
   * The timer alone let a fast writer fill a disk between two runs: every write appends, and at
   * 1 GB/s ten minutes are 600 GB (measured: a 2 GiB image's pool, remounted more often than
   * compact.every, took its filesystem's last byte at 79 GiB, and the index could no longer
   * be written). The step keeps a pool that history or snapshots hold full from compacting
   * on every tick for nothing. Returns the pool's used bytes when it is that short, else undefined.
   */
  private usedWhenShort (p: Policy): number | undefined {
    const at = p['compact.at']
    if (at <= 0 || this.pool === undefined) return undefined
    const { usedBytes, capacityBytes } = this.pool.use()
    if (capacityBytes <= 0 || usedBytes < at * capacityBytes) return undefined
    const step = Math.max(2 * this.store.config.segmentBytes, PRESSURE_STEP * capacityBytes)
    return this.usedAfterCompact === undefined || usedBytes >= this.usedAfterCompact + step ? usedBytes : undefined
  }

  /** Event policies: on.sync=snapshot, on.unmount=snapshot, on.snapshot=compact. */
  async onEvent (event: PolicyEvent): Promise<void> {
    const p = this.policyOf()
    this.store.setHistoryKeepMs(historyKeepMs(p))
    if ((event === 'sync' && p['on.sync'] === 'snapshot') || (event === 'unmount' && p['on.unmount'] === 'snapshot')) {
      await this.autoSnapshot(p, `on.${event}`)
      await this.retain(p)
    }
    if (event === 'snapshot' && p['on.snapshot'] === 'compact') await this.compactAndArchive(p)
  }

  private async autoSnapshot (p: Policy, why: string): Promise<void> {
    const stamp = new Date(this.now()).toISOString().replace(/[:.]/g, '-')
    let name = `${AUTO_PREFIX}${stamp}`
    for (let i = 2; this.store.snapshots().some(s => s.name === name); i++) name = `${AUTO_PREFIX}${stamp}-${i}`
    // Nobody is there to give an explicit id: automatic snapshots then take sequential ones.
    const ids = volumeIdPolicy(p)
    const snap = await this.store.snapshot({ name, idPolicy: ids.mode === 'explicit' ? { ...ids, mode: 'sequential' } : ids })
    this.log.info({ name: snap.name, id: snap.id, seq: snap.seq }, `${why}: took snapshot ${snap.name}`)
    if (p['on.snapshot'] === 'compact') await this.compactAndArchive(p)
  }

  /** snapshot.keep=K: the newest K automatic snapshots stay; older automatic ones go. */
  private async retain (p: Policy): Promise<void> {
    const keep = p['snapshot.keep']
    if (keep <= 0) return
    const autos = this.store.snapshots().filter(s => s.name.startsWith(AUTO_PREFIX))
    for (const s of autos.slice(0, Math.max(0, autos.length - keep))) {
      if (this.inUse(s.name)) {
        this.log.warn({ name: s.name }, `snapshot.keep=${keep}: ${s.name}.img is open; deleting it once it is closed`)
        continue
      }
      try {
        await deleteSnapshotRespectingClones(this.store, s.name)
      } catch (err) {
        // A clone reads it, or the replica that says whether one does is unreachable: kept.
        if (!isLogdiskError(err, 'BUSY') && !isLogdiskError(err, 'IO')) throw err
        if (!this.keptWarned.has(s.name)) this.log.warn({ name: s.name, err: err.message }, `snapshot.keep=${keep}: ${s.name} is kept: ${err.message}`)
        this.keptWarned.add(s.name) // once per snapshot, not every tick
        continue
      }
      this.log.info({ name: s.name, id: s.id }, `snapshot.keep=${keep}: deleted snapshot ${s.name}, which retention no longer keeps`)
    }
  }

  /** Compacts, then archives when there is a target; true if either gave disk space back. */
  private async compactAndArchive (p: Policy): Promise<boolean> {
    const c = await this.store.compact({ cleanBelow: p['compact.cleanBelow'] })
    const a = p['archive.target'] !== '' ? await this.store.archive({ olderThanMs: parseDuration(p['archive.after']), workingSet: p['segments.workingSet'] }) : undefined
    this.usedAfterCompact = this.pool?.use().usedBytes
    return c.segmentsRecycled > 0 || c.bytesPunched > 0 || (a?.removedLocal ?? 0) > 0
  }

  /**
   * A write found no room (Store.setNoSpaceHandler): compact (and archive) now instead of at
   * the next tick, and say whether that gave space back, so the write is tried once more.
   * The writes that find no room meanwhile wait for the same run. A run that freed nothing is
   * not run again for another write within NO_SPACE_RETRY_MS unless the pool's use changed:
   * a pool full of live data fails its writes at once, not each after a whole pass. Not with
   * compact.at=0, which turns compaction under pressure off.
   */
  relieveNoSpace (): Promise<boolean> {
    if (this.relieving) return this.relieving
    // compact.at=0 turns compaction under pressure off: this one too.
    if (this.policyOf()['compact.at'] <= 0) return Promise.resolve(false)
    const used = this.pool?.use().usedBytes
    const last = this.fruitless
    if (last && last.used === used && this.now() - last.atMs < NO_SPACE_RETRY_MS) return Promise.resolve(false)
    this.relieving = (async () => {
      this.log.warn({ usedBytes: used }, 'a write found no room: compacting now')
      const freed = await this.compactAndArchive(this.policyOf())
      this.fruitless = freed ? undefined : { used: this.pool?.use().usedBytes, atMs: this.now() }
      if (!freed) this.log.warn({}, 'the compaction for a write that found no room freed nothing (the pool holds live data, snapshots or history): the write fails with ENOSPC')
      return freed
    })().finally(() => { this.relieving = undefined })
    return this.relieving
  }
}
