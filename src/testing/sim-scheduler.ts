import type { Rng } from './rng'

/**
 * The seeded scheduler of the deterministic simulation (after TigerBeetle's VOPR and
 * FoundationDB's simulator). Every simulated I/O operation (a segment write, a datasync, an
 * index commit, an archive put) asks `io(label)` and waits; the scheduler completes pending
 * operations one at a time, in an order the seed chooses, so completions are reordered and
 * delayed exactly the same way on every run of one seed. Faults are injected per operation
 * label. Virtual time advances with every step; nothing reads the wall clock.
 *
 * Determinism needs a closed world: while `run` drives, every asynchronous operation of the
 * code under test must go through `io` (or be a plain promise). A real timer or real I/O shows
 * up as "stuck: nothing pending".
 */
export interface FaultRule {
  /** Operation labels this rule applies to (e.g. /^write .*\/v1\//). */
  match: RegExp
  /** errno code the operation fails with. */
  code: string
  /** Probability per matching operation. */
  chance: number
}

interface Pending {
  label: string
  resolve: () => void
  reject: (err: Error) => void
}

export class SimScheduler {
  private pending: Pending[] = []
  private rules: FaultRule[] = []
  /** Virtual milliseconds since the epoch of the simulation. */
  nowMs = Date.UTC(2026, 0, 1)
  steps = 0
  faultsInjected = 0
  /** Set while the simulated machine has lost power: every operation fails. */
  private powerLost = false

  constructor (readonly rng: Rng) {}

  /** The virtual clock, for the store's `clock` option. */
  readonly clock = (): number => this.nowMs

  /** Waits until the scheduler completes this operation (or fails it). */
  io (label: string): Promise<void> {
    if (this.powerLost) return Promise.reject(errnoError('EIO', `${label} (the simulated machine lost power)`))
    return new Promise((resolve, reject) => { this.pending.push({ label, resolve, reject }) })
  }

  /**
   * A synchronous operation (a writev or read made at once on the calling thread,
   * IoOptions.inline): nothing can come between its call and its end, so it is not queued;
   * it takes virtual time and faults as a queued one would, by the seed.
   */
  ioNow (label: string): void {
    if (this.powerLost) throw errnoError('EIO', `${label} (the simulated machine lost power)`)
    // Not a step: `steps` counts the queued operations `run` completes, where a power loss
    // may come between two (tests count a pass's steps to fail the power inside it).
    this.nowMs += this.rng.int(4)
    const rule = this.rules.find(r => r.match.test(label))
    if (rule && this.rng.chance(rule.chance)) {
      this.faultsInjected++
      throw Object.assign(errnoError(rule.code, `${label} (injected ${rule.code})`), { injected: true })
    }
  }

  setFaults (rules: FaultRule[]): void {
    this.rules = rules
  }

  /** Power fails: pending and later operations fail until `restorePower`. */
  losePower (): void {
    this.powerLost = true
    const pending = this.pending
    this.pending = []
    for (const p of pending) p.reject(errnoError('EIO', `${p.label} (the simulated machine lost power)`))
  }

  restorePower (): void {
    this.powerLost = false
  }

  get pendingCount (): number {
    return this.pending.length
  }

  /**
   * Completes pending operations in seeded order until `work` settles; after `crashAfter`
   * steps (if given) power fails instead and the rest is left to fail. Returns whether power
   * was lost during the run.
   */
  async run (work: Promise<unknown>, opts: { crashAfterSteps?: number, maxSteps?: number } = {}): Promise<{ powerLost: boolean }> {
    let settled = false
    work.then(() => { settled = true }, () => { settled = true })
    let idle = 0
    let steps = 0
    const max = opts.maxSteps ?? 2_000_000
    while (true) {
      await new Promise(resolve => setImmediate(resolve)) // every microtask of the last step runs
      if (settled) return { powerLost: this.powerLost }
      if (opts.crashAfterSteps !== undefined && steps >= opts.crashAfterSteps && !this.powerLost) {
        this.losePower()
        continue
      }
      if (this.pending.length === 0) {
        if (++idle > 100) throw new Error(`simulation stuck after ${this.steps} steps: work not done and no I/O pending (a real timer or real I/O in the code under test?)`)
        continue
      }
      idle = 0
      if (++steps > max) throw new Error(`simulation did not finish in ${max} steps`)
      this.steps++
      this.nowMs += this.rng.int(4)
      const op = this.pending.splice(this.rng.int(this.pending.length), 1)[0]
      const rule = this.rules.find(r => r.match.test(op.label))
      if (rule && this.rng.chance(rule.chance)) {
        this.faultsInjected++
        op.reject(Object.assign(errnoError(rule.code, `${op.label} (injected ${rule.code})`), { injected: true }))
      } else {
        op.resolve()
      }
    }
  }
}

export function errnoError (code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${message}`), { code })
}
