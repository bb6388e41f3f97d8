import { LogdiskError } from '../errors'
import type { FileHandle } from './file-layer'
import type { Logger } from './logger'

/**
 * One segment kept as several identical files on different pool volumes (F10, seed 001
 * Fig. 2): writes go to every copy, reads to the first copy that answers. A copy that fails
 * a write is dropped (degraded), and the loss is logged; the others carry on. Only when no
 * copy is left does an operation fail. `verify` reports lost copies; `pool repair` restores.
 */
export class MirroredHandle implements FileHandle {
  constructor (readonly copies: Array<{ volume: string, file: string, handle: FileHandle }>, private readonly log: Logger) {}

  get volumes (): string[] {
    return this.copies.map(c => c.volume)
  }

  /** Reads from copy `index` only (a CRC mismatch on one copy retries the next). */
  readCopy (index: number, buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    return this.copies[index].handle.read(buf, bufOffset, length, position)
  }

  async read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    let last: unknown
    for (const c of this.copies) {
      try {
        return await c.handle.read(buf, bufOffset, length, position)
      } catch (err) {
        last = err
        this.log.error({ file: c.file, err: (err as Error).message }, 'read failed on one copy; trying the next')
      }
    }
    throw last
  }

  private async onEvery (what: string, op: (h: FileHandle) => Promise<void>): Promise<void> {
    const results = await Promise.allSettled(this.copies.map(c => op(c.handle)))
    const failed = results.map((r, i) => r.status === 'rejected' ? i : -1).filter(i => i >= 0)
    if (failed.length === 0) return
    if (failed.length === this.copies.length) throw (results[0] as PromiseRejectedResult).reason
    for (const i of failed.reverse()) {
      const c = this.copies[i]
      this.log.error({ file: c.file, volume: c.volume, err: ((results[i] as PromiseRejectedResult).reason as Error).message }, `${what} failed on one copy; continuing on the others (degraded: run logdisk pool repair)`)
      c.handle.close().catch(() => undefined)
      this.copies.splice(i, 1)
    }
  }

  writev (buffers: Buffer[], position: number): Promise<void> {
    return this.onEvery('write', h => h.writev(buffers, position))
  }

  datasync (): Promise<void> {
    return this.onEvery('fdatasync', h => h.datasync())
  }

  truncate (length: number): Promise<void> {
    return this.onEvery('truncate', h => h.truncate(length))
  }

  async size (): Promise<number> {
    if (this.copies.length === 0) throw new LogdiskError('IO', 'no copy of the segment is left')
    return this.copies[0].handle.size()
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.copies.map(c => c.handle.close()))
  }
}
