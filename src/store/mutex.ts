/**
 * Runs async sections one at a time, in call order. Appends to the log go through one: the
 * tail, the sequence number and read-modify-write of partial blocks need no other locking.
 * (fuse-native's libfuse 2.9 sends one write at a time per file anyway, so this costs nothing.)
 */
export class Mutex {
  private last: Promise<unknown> = Promise.resolve()
  /** Sections queued since the start; a group commit joins a queued section only while this is unchanged. */
  queued = 0

  /**
   * Runs `section` once every section queued before it has finished. With `signal`, a caller
   * still waiting for its turn when the signal aborts is rejected at once with the signal's
   * reason, and its section never runs (an interrupted job waiting behind a compaction: it
   * stopped only once it had the lock, perhaps minutes later). A section that has begun runs
   * on: the signal is its own business then.
   */
  run<T> (section: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted === true) return Promise.reject(signal.reason)
    this.queued++
    let begun = false
    const result = this.last.then(() => {
      if (signal?.aborted === true) throw signal.reason
      begun = true
      return section()
    })
    this.last = result.catch(() => undefined)
    if (signal === undefined) return result
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => { if (!begun) reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
      result.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
    })
  }

  /** Resolves once every section queued so far has finished. */
  idle (): Promise<void> {
    return this.last.then(() => undefined)
  }
}
