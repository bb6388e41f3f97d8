/**
 * Read grace periods (epoch-based reclamation). A read looks a block's location up and then
 * reads the bytes a moment later; a pass that punches, deletes or overwrites those bytes in
 * between would make the read fail its checksum. So every read runs inside an epoch, and a
 * pass that is about to make bytes unreadable first waits until every read that began before
 * it has ended (`drain`). Reads that begin later look the block up afresh and find its new
 * place, because the pass changed the index (or decided the bytes were dead) before draining.
 */
export class ReadEpochs {
  private epoch = 0
  /** Reads in flight, by the epoch they began in. */
  private readonly active = new Map<number, number>()
  private waiters: Array<{ epoch: number, wake: () => void }> = []

  enter (): number {
    const e = this.epoch
    this.active.set(e, (this.active.get(e) ?? 0) + 1)
    return e
  }

  exit (epoch: number): void {
    const n = (this.active.get(epoch) ?? 1) - 1
    if (n > 0) {
      this.active.set(epoch, n)
      return
    }
    this.active.delete(epoch)
    this.waiters = this.waiters.filter(w => {
      if (this.busyUpTo(w.epoch)) return true
      w.wake()
      return false
    })
  }

  /** Runs `read` inside an epoch. */
  async guard<T> (read: () => Promise<T>): Promise<T> {
    const e = this.enter()
    try {
      return await read()
    } finally {
      this.exit(e)
    }
  }

  /** Resolves once every read that began before this call has ended. */
  drain (): Promise<void> {
    const e = this.epoch++
    if (!this.busyUpTo(e)) return Promise.resolve()
    return new Promise(resolve => { this.waiters.push({ epoch: e, wake: resolve }) })
  }

  private busyUpTo (epoch: number): boolean {
    for (const e of this.active.keys()) if (e <= epoch) return true
    return false
  }

  /** Reads in flight now (status, tests). */
  get inFlight (): number {
    let n = 0
    for (const v of this.active.values()) n += v
    return n
  }
}
