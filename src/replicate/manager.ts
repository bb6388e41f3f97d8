import path from 'node:path'
import { parseTarget } from '../archive/parse-target'
import type { ArchiveTarget } from '../archive/target'
import { parseDuration, type Policy } from '../policy/policy'
import type { Store } from '../store'
import { silentLogger, type Logger } from '../store/logger'
import { readReplicaState } from './gate'
import { Replicator, type ReplicationStatus } from './replicator'

/** The replica `spec` names (tests give their own: ReplicationManager's options.targetFor). */
function defaultTarget (spec: string): ArchiveTarget {
  return parseTarget(spec, process.env, { role: 'replica' })
}

const running = new Map<string, ReplicationManager>()

/**
 * Runs the replicator a store's policy asks for (replicate.target, replicate.interval,
 * replicate.lagWarn), in the mount daemon: the policy engine calls `apply` on every tick, so
 * `policy set replicate.target=...` takes effect on a mounted store.
 */
export class ReplicationManager {
  private replicator: Replicator | undefined
  private key = ''
  private applying: Promise<void> | undefined
  private closed = false

  constructor (readonly store: Store, private readonly log: Logger = silentLogger, private readonly options: { takeover?: boolean, targetFor?: (spec: string) => ArchiveTarget } = {}) {
    running.set(path.resolve(store.dir), this)
  }

  /** Starts, restarts or stops the replicator to match the policy. LEASE_HELD and the like throw when `strict`. */
  async apply (p: Policy, strict = false): Promise<void> {
    while (this.applying) await this.applying.catch(() => undefined)
    this.applying = this.applyNow(p, strict)
    try { await this.applying } finally { this.applying = undefined }
  }

  private async applyNow (p: Policy, strict: boolean): Promise<void> {
    if (this.closed) return // stopped for good (unmount): a late policy tick starts nothing
    const spec = p['replicate.target']
    const key = spec === '' ? '' : `${spec} ${p['replicate.interval']} ${p['replicate.lagWarn']} ${p['replicate.indexEvery']}`
    if (key === this.key) return
    if (this.replicator) {
      const old = this.replicator
      this.replicator = undefined
      await old.stop({ final: true })
      // Its target's connections (an S3 client each): a policy change left them open, one
      // client more per change (helper-76).
      await old.target.close().catch(() => undefined)
    }
    this.key = ''
    if (spec === '') return
    const target = (this.options.targetFor ?? defaultTarget)(spec)
    try {
      this.replicator = await Replicator.start(this.store, target, {
        spec,
        intervalMs: parseDuration(p['replicate.interval']),
        lagWarnMs: parseDuration(p['replicate.lagWarn']),
        indexEverySegments: p['replicate.indexEvery'],
        takeover: this.options.takeover,
        log: this.log,
        strict
      })
    } catch (err) {
      await target.close().catch(() => undefined)
      if (strict) throw err
      this.log.error({ err: (err as Error).message }, 'replication could not start')
      this.key = key // not retried every tick: policy set (or a remount) tries again
      return
    }
    this.options.takeover = false // a takeover is for the first start only
    this.key = key
  }

  async status (): Promise<ReplicationStatus | undefined> {
    return await this.replicator?.status()
  }

  /** Ships what is durable one last time (bounded), releases the lease; returns what then stays unshipped (undefined: nothing ran). */
  async stop (): Promise<{ lagBytes: number, lastError: string | null } | undefined> {
    this.closed = true
    while (this.applying) await this.applying.catch(() => undefined)
    const r = this.replicator
    this.replicator = undefined
    this.key = ''
    running.delete(path.resolve(this.store.dir))
    if (!r) return undefined
    await r.stop({ final: true })
    await r.target.close().catch(() => undefined)
    const { lagBytes, lastError } = await r.status()
    return { lagBytes, lastError }
  }
}

/** What `status` says about replication: the running replicator's figures, else what replica.json recorded. */
export async function replicationStatus (store: Store, p: Policy): Promise<Partial<ReplicationStatus> | undefined> {
  const m = running.get(path.resolve(store.dir))
  const live = await m?.status()
  if (live) return live
  if (p['replicate.target'] === '') return undefined
  const s = readReplicaState(store.dir)
  return {
    target: p['replicate.target'],
    state: 'stopped',
    warnings: [`replication to ${p['replicate.target']} runs while the store is mounted; it is not mounted${s && s.target === p['replicate.target'] ? ` (segments below ${s.shippedBelow} are on the replica)` : ''}`]
  }
}
