/**
 * Runs async sections one at a time, in call order. Appends to the log go through one: the
 * tail, the sequence number and read-modify-write of partial blocks need no other locking.
 * (fuse-native's libfuse 2.9 sends one write at a time per file anyway, so this costs nothing.)
 */
export class Mutex {
  private last: Promise<unknown> = Promise.resolve()
  /** Sections queued since the start; a group commit joins a queued section only while this is unchanged. */
  queued = 0

  run<T> (section: () => Promise<T>): Promise<T> {
    this.queued++
    const result = this.last.then(section)
    this.last = result.catch(() => undefined)
    return result
  }

  /** Resolves once every section queued so far has finished. */
  idle (): Promise<void> {
    return this.last.then(() => undefined)
  }
}
