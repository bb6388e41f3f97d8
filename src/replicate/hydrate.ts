import { LogdiskError } from '../errors'
import type { Store } from '../store'
import { silentLogger, type Logger } from '../store/logger'
import { readReplicaSource, releaseSourceReader } from './source-link'

export interface HydrateStatus {
  /** Segments still only on the replica. */
  remaining: number
  /** Brought back since it started. */
  done: number
  bytes: number
  lastError: string | null
  finished: boolean
}

/**
 * The background fetch of a store recovered lazily (recover.ts): brings the segments it left on
 * the replica (replica-source.json) back into its pool, one at a time, oldest first, each under
 * the maintenance lock (Store.bringBackSegment, Placement.bringBack: the simulation runs it
 * against reads, writes, compaction, archiving, drains and power losses). Reads never wait for
 * it: a read of a segment not back yet fetches it into the bounded cache meanwhile. A failure
 * (the replica unreachable) is retried after `retryMs`; `stop` ends it between segments. When
 * every segment is local, the store's reader record on the replica is deleted.
 */
export class Hydrator {
  private stopped = false
  private readonly st: HydrateStatus = { remaining: 0, done: 0, bytes: 0, lastError: null, finished: false }
  private running: Promise<void> | undefined
  private wake: (() => void) | undefined

  constructor (private readonly store: Store, private readonly log: Logger = silentLogger, private readonly opts: { retryMs?: number, pauseMs?: number } = {}) {}

  /** Segments of the store that are still only on the replica, oldest first. */
  pending (): number[] {
    const source = readReplicaSource(this.store.dir)
    if (!source) return []
    const remote = new Set(Object.keys(source.segments).map(Number))
    return this.store.logSegments().filter(s => s.state === 'archived' && remote.has(s.id) && this.store.volumesOf(s.id) === undefined).map(s => s.id)
  }

  start (): this {
    this.running ??= this.run()
    return this
  }

  /** Resolves once every segment is back (or it was stopped). */
  done (): Promise<void> {
    return this.start().running!
  }

  status (): HydrateStatus {
    return { ...this.st }
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.wake?.()
    await this.running?.catch(() => undefined)
  }

  private async sleep (ms: number): Promise<void> {
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, ms)
      timer.unref()
      this.wake = () => { clearTimeout(timer); resolve() }
    })
  }

  private async run (): Promise<void> {
    while (!this.stopped) {
      const ids = this.pending()
      this.st.remaining = ids.length
      if (ids.length === 0) break
      try {
        const n = await this.store.bringBackSegment(ids[0])
        // Nothing done while it is still away: no link to fetch it through (found: the policy
        // engine once replaced the store's link with one without the replica, and this looped).
        if (n === 0 && this.pending().includes(ids[0])) throw new LogdiskError('NOT_FOUND', `segment ${ids[0]} could not be brought back: the store has no link to the replica it is on`)
        this.st.bytes += n
        this.st.done++
        this.st.lastError = null
      } catch (err) {
        if (this.stopped) break
        const msg = (err as Error).message
        if (msg !== this.st.lastError) this.log.warn({ segment: ids[0], err: msg }, 'fetching a segment from the replica failed; retrying (reads fetch what they need meanwhile)')
        this.st.lastError = msg
        await this.sleep(this.opts.retryMs ?? 5000)
        continue
      }
      if (this.opts.pauseMs) await this.sleep(this.opts.pauseMs)
    }
    if (!this.stopped) {
      this.st.remaining = 0
      this.st.finished = true
      if (this.st.done > 0) this.log.info({ segments: this.st.done, bytes: this.st.bytes }, 'every segment left on the replica is local again')
      // Its record kept them on the replica until now (reader-records.ts); if the replica is
      // unreachable the record stays (it keeps objects, never data) and the next mount tries again.
      await releaseSourceReader(this.store.dir).catch((err: Error) => this.log.warn({ err: err.message }, 'could not delete this store\'s reader record on the replica; the next mount tries again'))
    }
  }
}
