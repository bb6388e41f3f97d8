import { LogdiskError, isFilesystemFull } from '../errors'
import { readUpTo, type FileHandle } from './file-layer'
import type { Logger } from './logger'

/**
 * One segment kept as several identical files on different pool volumes (F10, seed 001
 * Fig. 2): writes go to every copy, reads to the first copy that answers. A copy that fails
 * a write is dropped (degraded), and the loss is logged; the others carry on (a full
 * filesystem under the current segment's copy rolls instead: rollWhenFull). Only when no
 * copy is left does an operation fail. `verify` reports lost copies; `pool repair` restores.
 */
export class MirroredHandle implements FileHandle {
  /** Settles once the copies match; see reconcile(). */
  private reconciled: Promise<void> | undefined

  constructor (
    readonly copies: Array<{ volume: string, file: string, handle: FileHandle }>,
    private readonly log: Logger,
    /**
     * Told when a copy is dropped, before the operation that dropped it returns: the store
     * records it durably before it acknowledges a flush, so a restart never reads the stale
     * copy as if it were current.
     */
    private readonly onDropped: (volume: string) => void = () => {}
  ) {
    // The synchronous reads (IoOptions.inline) when the copies' layer has them: the reader
    // then serves a mirrored segment's cached reads on the event loop as it does a single
    // copy's (without them every read of a mirrored segment went through the thread pool).
    if (copies.every(c => c.handle.readNow !== undefined)) this.readNow = this.readFirstNow
    if (copies.every(c => c.handle.readCached !== undefined)) this.readCached = this.readCachedFirst
  }

  readNow?: (buf: Buffer, bufOffset: number, length: number, position: number) => number
  readCached?: (buf: Buffer, bufOffset: number, length: number, position: number) => number

  /** `read` done at once: the first copy that answers, as `read` (a failed copy is logged, not dropped). */
  private readonly readFirstNow = (buf: Buffer, bufOffset: number, length: number, position: number): number => {
    let last: unknown
    for (const c of this.copies) {
      try {
        return c.handle.readNow!(buf, bufOffset, length, position)
      } catch (err) {
        last = err
        this.log.error({ file: c.file, err: (err as Error).message }, 'read failed on one copy; trying the next')
      }
    }
    throw last ?? new LogdiskError('IO', 'no copy of the segment is left')
  }

  /**
   * `writev` done at once (IoOptions.inline) on every copy, once the copies were reconciled
   * (that takes I/O: until the first asynchronous change ran it, this is undefined and the
   * caller writes through `writev`) and when every copy's layer has it. A copy whose write
   * fails is dropped, as `writev` drops it (told to onDropped before this returns); only when
   * every copy failed does it throw.
   */
  get writevNow (): ((buffers: Buffer[], position: number) => void) | undefined {
    if (!this.reconcileDone || !this.copies.every(c => c.handle.writevNow !== undefined)) return undefined
    return this.writeEveryNow
  }

  /**
   * When set, a write that fails on some copies only because their filesystem is full
   * (ENOSPC, EDQUOT), and succeeds on the rest, fails whole and drops nothing: the appender
   * then cuts it back, seals the segment and rolls to volumes with room, keeping every copy
   * (dropping the full one went on with one copy fewer while other volumes had room). It
   * clears this when no new segment can be placed, and the write then goes on degraded here.
   */
  rollWhenFull = false

  /** Whether reconcile() has run to its end (copies it could not match were dropped). */
  private reconcileDone = false

  private readonly writeEveryNow = (buffers: Buffer[], position: number): void => {
    const copies = [...this.copies]
    if (copies.length === 0) throw new LogdiskError('IO', 'no copy of the segment is left')
    this.settle('write', copies, copies.map((c): PromiseSettledResult<void> => {
      try {
        c.handle.writevNow!(buffers, position)
        return { status: 'fulfilled', value: undefined }
      } catch (reason) {
        return { status: 'rejected', reason }
      }
    }))
  }

  /** What of the range the first copy's pages hold (never throws; `read` tries the others for the rest). */
  private readonly readCachedFirst = (buf: Buffer, bufOffset: number, length: number, position: number): number => {
    return this.copies[0]?.handle.readCached?.(buf, bufOffset, length, position) ?? 0
  }

  /** Operations in flight per copy (a dropped copy's handle closes once they are done). */
  private readonly busy = new Map<FileHandle, Set<Promise<unknown>>>()

  private drop (c: MirroredHandle['copies'][number]): void {
    // Other operations may still be queued on this copy (a group commit's later writevs, a
    // read): closing the fd under them would let them run on whatever file reuses its number.
    const inFlight = [...(this.busy.get(c.handle) ?? [])]
    void Promise.allSettled(inFlight).then(() => c.handle.close()).catch(() => undefined)
    this.copies.splice(this.copies.indexOf(c), 1)
    this.onDropped(c.volume)
  }

  /** Runs `op` on one copy's handle, counted among that copy's operations in flight. */
  private on<T> (h: FileHandle, op: (h: FileHandle) => Promise<T>): Promise<T> {
    let set = this.busy.get(h)
    if (set === undefined) this.busy.set(h, set = new Set())
    const p = op(h)
    const mine = set
    mine.add(p)
    const done = (): void => { mine.delete(p) }
    p.then(done, done)
    return p
  }

  get volumes (): string[] {
    return this.copies.map(c => c.volume)
  }

  /**
   * Reads from copy `index` only (a CRC mismatch on one copy retries the next): the whole
   * range, fewer bytes only at the end of that copy.
   */
  readCopy (index: number, buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    return this.on(this.copies[index].handle, h => readUpTo(h, buf.subarray(bufOffset, bufOffset + length), position))
  }

  async read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    let last: unknown
    for (const c of this.copies) {
      try {
        return await this.on(c.handle, h => h.read(buf, bufOffset, length, position))
      } catch (err) {
        last = err
        this.log.error({ file: c.file, err: (err as Error).message }, 'read failed on one copy; trying the next')
      }
    }
    throw last ?? new LogdiskError('IO', 'no copy of the segment is left')
  }

  /**
   * Before the first change through this handle, makes every copy the same length as the
   * first, the one reads (and recovery's scan) use. A power loss keeps a different prefix of
   * the unsynced appends in each copy: left alone, appends at the recovered tail would leave a
   * hole in a shorter copy or stale entries past the end of a longer one, and losing the first
   * copy would then lose flushed data. Appends go to every copy in the same order, so a
   * shorter copy is a prefix of the first: the missing bytes are copied, extra ones cut.
   * Only writers change copies: read-only opens (verify) never do this. Lengths only: under a
   * page cache writing back in any order, copies of equal length can still differ; recovery
   * makes the segments it replayed match byte for byte first (`matchCopies`).
   */
  private reconcile (): Promise<void> {
    this.reconciled ??= (async () => {
      await this.reconcileCopies()
      this.reconcileDone = true
    })()
    return this.reconciled
  }

  /**
   * Where recovery will cut this segment (a torn tail it found in the first copy): reconcile
   * and matchCopies make the copies match up to there only, the bytes past it go with the cut.
   * Copying the torn bytes into the other copies was for nothing, and a copy that could not
   * take them (a full filesystem) was dropped for bytes the cut removes (a hostile test,
   * helper-49). Said before the first change through this handle.
   */
  willCutAt (offset: number): void {
    this.cutAt = offset
  }

  private cutAt = Infinity

  private async reconcileCopies (): Promise<void> {
    if (this.copies.length < 2) return
    const first = this.copies[0]
    const size = Math.min(await first.handle.size(), this.cutAt)
    for (const c of [...this.copies.slice(1)]) {
      try {
        const n = await c.handle.size()
        if (n === size) continue
        if (n > size) {
          await c.handle.truncate(size)
        } else {
          const buf = Buffer.allocUnsafe(Math.min(4 * 1024 * 1024, size - n))
          for (let at = n; at < size;) {
            const got = await first.handle.read(buf, 0, Math.min(buf.length, size - at), at)
            if (got === 0) throw new LogdiskError('IO', `${first.file} ended early while copying it to ${c.file}`)
            await c.handle.writev([buf.subarray(0, got)], at)
            at += got
          }
        }
        await c.handle.datasync()
        this.log.warn({ file: c.file, from: first.file, had: n, now: size }, 'a copy of the segment differed from the first (power loss); made it match')
      } catch (err) {
        this.log.error({ file: c.file, volume: c.volume, err: (err as Error).message }, 'could not make a copy match the first; continuing on the others (degraded: run logdisk pool repair)')
        this.drop(c)
      }
    }
  }

  /**
   * Makes every other copy hold the first copy's bytes from `from` to its end, the first
   * copy's length included (recovery calls it on each segment it replayed, before it syncs and
   * indexes what it read there, which it read from the first copy). A power loss keeps each
   * copy's unsynced pages on its own (a page cache writes back in any order), so copies of the
   * same length can differ anywhere past their last sync: comparing lengths (`reconcile`) is not
   * enough, and a torn page left in a later copy would surface as EIO once the first copy is
   * lost. A copy that cannot be made to match is dropped, as in `reconcile`. Only up to where
   * recovery will cut (willCutAt): a longer copy is left for the cut.
   */
  async matchCopies (from: number): Promise<void> {
    if (this.copies.length < 2) return
    const first = this.copies[0]
    const cutting = Number.isFinite(this.cutAt)
    const size = cutting ? this.cutAt : await first.handle.size()
    const CHUNK = 1024 * 1024
    const a = Buffer.alloc(CHUNK)
    const b = Buffer.alloc(CHUNK)
    for (const c of [...this.copies.slice(1)]) {
      try {
        let fixed = 0
        for (let at = from; at < size; at += CHUNK) {
          const len = Math.min(CHUNK, size - at)
          if (await readUpTo(first.handle, a.subarray(0, len), at) !== len) throw new LogdiskError('IO', `${first.file} ended early while comparing it with ${c.file}`)
          const n = await readUpTo(c.handle, b.subarray(0, len), at)
          if (n === len && a.subarray(0, len).equals(b.subarray(0, len))) continue
          await c.handle.writev([a.subarray(0, len)], at)
          fixed += len
        }
        const n = await c.handle.size()
        const longer = n > size && !cutting
        if (longer) await c.handle.truncate(size)
        if (fixed > 0 || longer) {
          await c.handle.datasync()
          this.log.warn({ file: c.file, from: first.file, bytes: fixed, had: n, now: size }, 'a copy of the segment differed from the first after a power loss; made it match')
        }
      } catch (err) {
        this.log.error({ file: c.file, volume: c.volume, err: (err as Error).message }, 'could not make a copy match the first; continuing on the others (degraded: run logdisk pool repair)')
        this.drop(c)
      }
    }
  }

  private async onEvery (what: string, op: (h: FileHandle) => Promise<void>): Promise<void> {
    await this.reconcile()
    const copies = [...this.copies]
    if (copies.length === 0) throw new LogdiskError('IO', 'no copy of the segment is left')
    this.settle(what, copies, await Promise.allSettled(copies.map(c => this.on(c.handle, op))))
  }

  /**
   * What an operation on every copy of `copies` came to (`results`, one per copy): it failed
   * (throws the first error) unless it succeeded on a copy still kept; each copy it failed on
   * is dropped. The one rule for asynchronous (onEvery) and synchronous (writevNow) changes.
   */
  private settle (what: string, copies: MirroredHandle['copies'], results: Array<PromiseSettledResult<unknown>>): void {
    if (results.every(r => r.status === 'fulfilled')) return
    // Operations run at once (a group commit's writevs, a flush's fdatasync beside them): one
    // that failed on copy A and succeeded on B and another that failed on B and succeeded on A
    // must not drop both copies and both succeed. An operation succeeds only on a copy still kept.
    const kept = copies.filter((c, i) => results[i].status === 'fulfilled' && this.copies.includes(c))
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (kept.length === 0) throw failures[0].reason
    if (what === 'write' && this.rollWhenFull && failures.every(r => isFilesystemFull(r.reason))) throw failures[0].reason
    results.forEach((r, i) => {
      const c = copies[i]
      if (r.status !== 'rejected' || !this.copies.includes(c)) return // ok, or dropped meanwhile
      this.log.error({ file: c.file, volume: c.volume, err: (r.reason as Error).message }, `${what} failed on one copy; continuing on the others (degraded: run logdisk pool repair)`)
      this.drop(c)
    })
  }

  writev (buffers: Buffer[], position: number): Promise<void> {
    return this.onEvery('write', h => h.writev(buffers, position))
  }

  datasync (): Promise<void> {
    return this.onEvery('fdatasync', h => h.datasync())
  }

  /** The first copy's: reads go to it first (read, readFirstNow, readCachedFirst), so its pages are the ones worth having. */
  async warmCache (): Promise<void> {
    await this.copies[0]?.handle.warmCache?.()
  }

  /** Every copy's (advisory: copies without it, or failing, are left as they are). */
  async dropCache (): Promise<void> {
    await Promise.allSettled(this.copies.map(c => c.handle.dropCache?.()))
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
