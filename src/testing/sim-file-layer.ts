import path from 'node:path'
import { fromSystemError } from '../errors'
import type { FileHandle, FileLayer } from '../store/file-layer'
import type { Rng } from './rng'
import type { SimScheduler } from './sim-scheduler'

/**
 * An in-memory disk for deterministic crash tests, after TigerBeetle's src/testing/storage.zig.
 *
 * A real disk cannot be made to lose power at a chosen instant, and a kill -9 keeps the page
 * cache, so neither tests what the store promises: that what flush() made durable survives and
 * that anything else is lost whole or cut cleanly, never served torn. This layer remembers, per
 * file, the content as of the last datasync plus every write and truncate since; `crash()` keeps
 * a random prefix of those (the last write possibly torn) and, per directory, a random mix of
 * the names as of the last syncDir and the names now. The seed decides everything, so a failure
 * reproduces.
 *
 * Simplifications: directories themselves are durable once made; a crash keeps a prefix of a
 * file's unsynced operations (no reordering within a file, no garbage beyond what was written).
 */

type Op =
  | { kind: 'write', position: number, data: Buffer }
  | { kind: 'truncate', length: number }

export type FaultOp = 'writev' | 'datasync' | 'open' | 'syncDir'

/**
 * Growable bytes whose snapshots share memory. A snapshot freezes the bytes it covers and a
 * later change below that line copies first, so the log's pattern (append, datasync, append)
 * costs no copy per datasync and a crash copies only files with unsynced changes.
 */
class Bytes {
  private buf: Buffer
  length: number
  /** buf[0, frozen) is shared with snapshots and must not change. */
  private frozen: number

  constructor (init: Buffer) {
    this.buf = init
    this.length = init.length
    this.frozen = init.length
  }

  view (): Buffer {
    return this.buf.subarray(0, this.length)
  }

  snapshot (): Buffer {
    this.frozen = Math.max(this.frozen, this.length)
    return this.view()
  }

  write (position: number, data: Buffer): void {
    const end = position + data.length
    this.prepare(Math.min(position, this.length), end)
    data.copy(this.buf, position)
    this.length = Math.max(this.length, end)
  }

  truncate (length: number): void {
    if (length > this.length) this.prepare(this.length, length)
    this.length = length
  }

  /** Makes buf[from, to) writable, zero-filling any hole past the current end. */
  private prepare (from: number, to: number): void {
    if (from < this.frozen || to > this.buf.length) {
      const grown = Buffer.alloc(Math.max(to, this.length, from < this.frozen ? 0 : 2 * this.buf.length, 64 * 1024))
      this.buf.copy(grown, 0, 0, this.length)
      this.buf = grown
      this.frozen = 0
    }
    if (to > this.length) this.buf.fill(0, this.length, to)
  }
}

/** One file's bytes (an inode: names point at it, handles keep it after a rename). */
class SimFile {
  readonly bytes: Bytes
  /** Content as of the last datasync: what survives a crash for certain. */
  durable: Buffer
  /** Writes and truncates since the last datasync, in order. */
  pending: Op[] = []
  /**
   * Pages whose write-back failed (a failed fdatasync), with the bytes the disk still holds
   * there. Linux marks such pages clean after reporting the error once, so a later fdatasync
   * succeeds without writing them (PostgreSQL's "fsyncgate"): the disk keeps its old bytes
   * until a write touches the page again and makes it dirty.
   */
  private readonly lostPages = new Map<number, Buffer>()

  constructor (content: Buffer) {
    this.bytes = new Bytes(content)
    this.durable = this.bytes.snapshot()
  }

  get content (): Buffer {
    return this.bytes.view()
  }

  write (position: number, data: Buffer): void {
    this.bytes.write(position, data)
    this.pending.push({ kind: 'write', position, data })
    if (this.lostPages.size > 0 && data.length > 0) {
      for (let p = Math.floor(position / PAGE); p * PAGE < position + data.length; p++) this.lostPages.delete(p)
    }
  }

  truncate (length: number): void {
    this.bytes.truncate(length)
    this.pending.push({ kind: 'truncate', length })
    for (const p of this.lostPages.keys()) if (p * PAGE >= length) this.lostPages.delete(p)
  }

  datasync (): void {
    this.durable = this.withLostPages(this.bytes.snapshot())
    this.pending = []
  }

  /**
   * A datasync called at `mark` failed: the write-back of what it covered failed, and those
   * pages now hold on disk what they held at the last datasync (zeros past its length), whatever
   * a later datasync says.
   */
  writebackFailed (mark: { content: Buffer, ops: number }): void {
    for (const op of this.pending.slice(0, mark.ops)) {
      if (op.kind !== 'write') continue
      for (let p = Math.floor(op.position / PAGE); p * PAGE < op.position + op.data.length; p++) {
        if (this.lostPages.has(p)) continue
        const old = Buffer.alloc(PAGE)
        this.durable.copy(old, 0, Math.min(p * PAGE, this.durable.length), Math.min((p + 1) * PAGE, this.durable.length))
        this.lostPages.set(p, old)
      }
    }
  }

  /** `content` as a datasync leaves it on disk: the lost pages keep their old bytes. */
  private withLostPages (content: Buffer): Buffer {
    if (this.lostPages.size === 0) return content
    const out = Buffer.from(content)
    for (const [p, old] of this.lostPages) {
      if (p * PAGE < out.length) old.copy(out, p * PAGE, 0, Math.min(PAGE, out.length - p * PAGE))
    }
    return out
  }

  /** What a datasync called now covers: the content and the operations up to this instant. */
  syncMark (): { content: Buffer, ops: number } {
    return { content: this.bytes.snapshot(), ops: this.pending.length }
  }

  /**
   * Completes a datasync called at `mark`: fdatasync covers what was written before it was
   * called, not what lands while it runs (those stay unsynced).
   */
  datasyncTo (mark: { content: Buffer, ops: number }): void {
    const later = this.pending.slice(mark.ops)
    if (later.length === 0) return this.datasync()
    this.durable = this.withLostPages(mark.content)
    this.pending = later
  }

  /** What the disk holds after power loss: durable bytes plus a prefix of the rest, maybe torn. */
  crashImage (rng: Rng, pages = false): Buffer {
    if (pages && this.pending.length > 0) return this.pagesImage(rng)
    const keep = rng.int(this.pending.length + 1)
    const out = new Bytes(this.durable)
    for (let i = 0; i < keep; i++) {
      const op = this.pending[i]
      if (op.kind === 'truncate') {
        out.truncate(op.length)
      } else if (i === keep - 1 && op.data.length > 1 && rng.chance(0.5)) {
        out.write(op.position, op.data.subarray(0, rng.int(op.data.length)))
      } else {
        out.write(op.position, op.data)
      }
    }
    return out.snapshot()
  }

  /**
   * The `pages` crash model (a page cache writing back in any order): the length is the
   * current one or the durable one, and each page that changed since the last datasync holds
   * its durable or its current bytes, each page on its own.
   */
  private pagesImage (rng: Rng): Buffer {
    const now = this.bytes.view()
    const length = rng.chance(0.25) ? this.durable.length : now.length
    const out = Buffer.alloc(length)
    this.durable.copy(out, 0, 0, Math.min(length, this.durable.length))
    for (let at = 0; at < length; at += PAGE) {
      const end = Math.min(at + PAGE, length)
      const was = this.durable.subarray(Math.min(at, this.durable.length), Math.min(end, this.durable.length))
      const is = now.subarray(Math.min(at, now.length), Math.min(end, now.length))
      if (was.equals(is) || rng.chance(0.5)) continue
      out.fill(0, at, end)
      is.copy(out, at)
    }
    return out
  }
}

/** Page size of the `pages` crash model: the unit a page cache writes back. */
const PAGE = 4096

/** An errno-style error of `code` for `what`, mapped as the real file layer maps it (fromSystemError). */
export function errno (code: string, what: string): Error {
  return fromSystemError(Object.assign(new Error(`${code}: ${what}`), { code }), what)
}

/** Lets other callbacks run between operations, so "in flight" means something in tests. */
const tick = (): Promise<void> => new Promise(resolve => setImmediate(resolve))

export class SimFileLayer implements FileLayer {
  /**
   * With a scheduler, every operation waits for it (seeded reordering, fault injection by
   * label `<op> <path>`); without one, each operation just yields once.
   */
  constructor (private readonly scheduler?: SimScheduler) {}

  private live = new Map<string, SimFile>()
  /** Names per path as of the last syncDir of their directory. */
  private durableNames = new Map<string, SimFile>()
  private readonly dirs = new Set<string>()
  private readonly faults = new Map<FaultOp, NodeJS.ErrnoException>()
  /** Writes called and not yet done, per file; the most seen at once on one file. */
  private readonly writing = new Map<SimFile, number>()
  maxWritesInFlight = 0
  /** Synchronous operations (writevNow; readNow and readCached), all told. */
  readonly syncOps = { writes: 0, reads: 0 }
  /** Bumped by crash(): handles opened before it are dead, as after a reboot. */
  private generation = 0
  /**
   * When set, reads (`read`, `readNow`) return fewer bytes than asked for, by this rng, about
   * a third of the time: read(2) may stop short of the end of a file (a signal, a network
   * file system under a pool volume), and every caller must ask again for the rest. Its own
   * rng, so that a seed run without it replays as before.
   */
  shortReads: Rng | undefined
  private frozen = false

  /**
   * Makes the next `op` call throw `err` (an errno code like 'ENOSPC', or an errno-style
   * error), mapped the way the real layer maps it.
   */
  failNext (op: FaultOp, err: string | NodeJS.ErrnoException): void {
    this.faults.set(op, typeof err === 'string' ? Object.assign(new Error(err), { code: err }) : err)
  }

  /**
   * The instant power fails: every later operation (including ones already in flight) fails
   * and changes nothing. crash() then decides what reached the disk. Without freeze(), the
   * crash happens when crash() is called.
   */
  freeze (): void {
    this.frozen = true
  }

  /**
   * Power loss and reboot; see the class comment for what survives. `pages`: instead of a
   * prefix of each file's unsynced operations, any mix of its changed pages (pagesImage).
   */
  crash (rng: Rng, opts: { pages?: boolean } = {}): void {
    const names = new Map<string, SimFile>()
    for (const name of new Set([...this.live.keys(), ...this.durableNames.keys()])) {
      const now = this.live.get(name)
      const synced = this.durableNames.get(name)
      const file = now === synced || rng.chance(0.5) ? now : synced
      if (file) names.set(name, file)
    }
    const images = new Map<SimFile, Buffer>()
    this.live = new Map()
    for (const name of [...names.keys()].sort()) {
      const file = names.get(name)!
      let image = images.get(file)
      if (!image) images.set(file, image = file.crashImage(rng, opts.pages))
      this.live.set(name, new SimFile(image)) // after a reboot every byte is on disk
    }
    this.durableNames = new Map(this.live)
    this.generation++
    this.frozen = false
  }

  /** Test access: the current bytes of a file, or undefined. */
  readFile (file: string): Buffer | undefined {
    const f = this.live.get(path.normalize(file))
    return f && Buffer.from(f.content)
  }

  /** Test access: overwrite bytes in place, durably (bit rot, a stray writer). */
  poke (file: string, position: number, data: Buffer): void {
    const f = this.live.get(path.normalize(file))
    if (!f) throw errno('ENOENT', `poke ${file}`)
    f.write(position, Buffer.from(data))
    f.datasync()
  }

  /** Test access: every file path, sorted. */
  files (): string[] {
    return [...this.live.keys()].sort()
  }

  /** Waits for the scheduler; throws a power loss, or an injected fault (marked `injected`). */
  private async enter (op: FaultOp | undefined, what: string, generation = this.generation): Promise<void> {
    if (this.scheduler) {
      await this.scheduler.io(what).catch(err => { throw scheduledFault(err, what) })
    } else {
      await tick()
    }
    this.passed(op, what, generation)
  }

  /** `enter` for a synchronous operation (SimHandle's writevNow, readNow, readCached). */
  private enterNow (op: FaultOp | undefined, what: string, generation: number): void {
    if (what.startsWith('write')) this.syncOps.writes++
    else this.syncOps.reads++
    try {
      this.scheduler?.ioNow(what)
    } catch (err) {
      throw scheduledFault(err, what)
    }
    this.passed(op, what, generation)
  }

  /** After the scheduler let an operation through: a power loss since, or a fault failNext set, fails it. */
  private passed (op: FaultOp | undefined, what: string, generation: number): void {
    if (this.frozen || generation !== this.generation) throw errno('EIO', `${what} (the simulated machine lost power)`)
    const fault = op && this.faults.get(op)
    if (fault) {
      this.faults.delete(op)
      throw Object.assign(fromSystemError(fault, what), { injected: true })
    }
  }

  async open (file: string, create: boolean): Promise<FileHandle> {
    file = path.normalize(file)
    await this.enter('open', `open ${file}`)
    let f = this.live.get(file)
    if (!f) {
      if (!create || !this.dirs.has(path.dirname(file))) throw errno('ENOENT', `open ${file}`)
      f = new SimFile(Buffer.alloc(0))
      this.live.set(file, f)
    }
    const generation = this.generation
    return new SimHandle(f, file, (op, what) => this.enter(op, what, generation), (op, what) => this.enterNow(op, what, generation), this.scheduler?.rng, (delta) => {
      const n = (this.writing.get(f) ?? 0) + delta
      this.writing.set(f, n)
      this.maxWritesInFlight = Math.max(this.maxWritesInFlight, n)
    }, () => this.shortReads)
  }

  async list (dir: string): Promise<string[]> {
    dir = path.normalize(dir)
    await this.enter(undefined, `list ${dir}`)
    if (!this.dirs.has(dir)) throw errno('ENOENT', `list ${dir}`)
    const out = new Set<string>()
    for (const name of this.live.keys()) if (path.dirname(name) === dir) out.add(path.basename(name))
    for (const d of this.dirs) if (path.dirname(d) === dir && d !== dir) out.add(path.basename(d))
    return [...out].sort()
  }

  async remove (file: string): Promise<void> {
    file = path.normalize(file)
    await this.enter(undefined, `remove ${file}`)
    this.live.delete(file)
  }

  async rename (from: string, to: string): Promise<void> {
    from = path.normalize(from)
    to = path.normalize(to)
    await this.enter(undefined, `rename ${from}`)
    const f = this.live.get(from)
    if (!f || !this.dirs.has(path.dirname(to))) throw errno('ENOENT', `rename ${from}`)
    this.live.delete(from)
    this.live.set(to, f)
  }

  async mkdirp (dir: string): Promise<void> {
    dir = path.normalize(dir)
    await this.enter(undefined, `mkdir ${dir}`)
    for (let d = dir; !this.dirs.has(d); d = path.dirname(d)) {
      this.dirs.add(d)
      if (path.dirname(d) === d) break
    }
  }

  /** A punched range reads as zeros; like a write, it is durable only after datasync. */
  async punchHole (file: string, offset: number, length: number): Promise<void> {
    file = path.normalize(file)
    await this.enter(undefined, `punch ${file}`)
    const f = this.live.get(file)
    if (!f) throw errno('ENOENT', `punch ${file}`)
    const end = Math.min(offset + length, f.content.length)
    if (end > offset) f.write(offset, Buffer.alloc(end - offset))
  }

  async syncDir (dir: string): Promise<void> {
    dir = path.normalize(dir)
    await this.enter('syncDir', `fsync ${dir}`)
    if (!this.dirs.has(dir)) throw errno('ENOENT', `fsync ${dir}`)
    for (const name of [...this.durableNames.keys()]) if (path.dirname(name) === dir) this.durableNames.delete(name)
    for (const [name, f] of this.live) if (path.dirname(name) === dir) this.durableNames.set(name, f)
  }
}

/** A failure the scheduler gave an operation (a power loss or an injected fault), as the layer throws it. */
function scheduledFault (err: unknown, what: string): Error {
  return Object.assign(fromSystemError(err, what), { injected: (err as { injected?: boolean }).injected === true })
}

class SimHandle implements FileHandle {
  private closed = false

  constructor (
    private readonly f: SimFile,
    private readonly file: string,
    /** Fails once the machine lost power after this handle was opened. */
    private readonly gate: (op: FaultOp | undefined, what: string) => Promise<void>,
    /** The gate of a synchronous operation: throws at once. */
    private readonly gateNow: (op: FaultOp | undefined, what: string) => void,
    /** Decides, by the seed, how much of a range readCached finds "in the page cache". */
    private readonly rng: Rng | undefined,
    /** Counts writes in flight on the file. */
    private readonly writing: (delta: number) => void = () => {},
    /** The layer's shortReads rng, if reads stop short now. */
    private readonly shortReads: () => Rng | undefined = () => undefined
  ) {}

  private async enter (op: FaultOp | undefined, what: string): Promise<void> {
    if (this.closed) throw errno('EBADF', `${what} ${this.file}`)
    await this.gate(op, `${what} ${this.file}`)
  }

  async read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    await this.enter(undefined, 'read')
    return this.copyOut(buf, bufOffset, this.shortened(length), position)
  }

  /** `length`, or by the shortReads rng a part of it (at least one byte: only the end of a file reads 0). */
  private shortened (length: number): number {
    const rng = this.shortReads()
    return rng !== undefined && length > 1 && rng.chance(1 / 3) ? 1 + rng.int(length - 1) : length
  }

  /** Up to `length` bytes of the file from `position` into buf[bufOffset..]; fewer at its end. */
  private copyOut (buf: Buffer, bufOffset: number, length: number, position: number): number {
    if (position >= this.f.content.length) return 0
    return this.f.content.copy(buf, bufOffset, position, Math.min(position + length, this.f.content.length))
  }

  /**
   * The synchronous writev (IoOptions.inline): all or nothing like `writev`, and torn by a
   * crash like any unsynced write (SimFile keeps what reached the disk).
   */
  writevNow (buffers: Buffer[], position: number): void {
    this.enterNow('writev', 'write')
    this.f.write(position, Buffer.concat(buffers))
  }

  readNow (buf: Buffer, bufOffset: number, length: number, position: number): number {
    this.enterNow(undefined, 'read')
    return this.copyOut(buf, bufOffset, this.shortened(length), position)
  }

  /**
   * What of the range "the page cache holds": by the seed all of it, none, or a first part
   * (preadv2 RWF_NOWAIT stops at the first page it would wait for). Never throws.
   */
  readCached (buf: Buffer, bufOffset: number, length: number, position: number): number {
    if (this.rng === undefined || this.closed) return 0
    const r = this.rng.int(3)
    const want = r === 0 ? 0 : r === 1 ? length : this.rng.int(length + 1)
    try {
      this.enterNow(undefined, 'read')
    } catch {
      return 0
    }
    return this.copyOut(buf, bufOffset, want, position)
  }

  private enterNow (op: FaultOp | undefined, what: string): void {
    if (this.closed) throw errno('EBADF', `${what} ${this.file}`)
    this.gateNow(op, `${what} ${this.file}`)
  }

  async writev (buffers: Buffer[], position: number): Promise<void> {
    const data = Buffer.concat(buffers) // the caller may reuse its buffers once this returns
    this.writing(1)
    try {
      await this.enter('writev', 'write')
      // One operation, so a crash can tear it anywhere, as a large pwritev can be torn.
      this.f.write(position, data)
    } finally {
      this.writing(-1)
    }
  }

  async datasync (): Promise<void> {
    const mark = this.f.syncMark()
    try {
      await this.enter('datasync', 'fdatasync')
    } catch (err) {
      if ((err as { injected?: boolean }).injected === true) this.f.writebackFailed(mark)
      throw err
    }
    this.f.datasyncTo(mark)
  }

  async truncate (length: number): Promise<void> {
    await this.enter(undefined, 'truncate')
    this.f.truncate(length)
  }

  async size (): Promise<number> {
    await this.enter(undefined, 'stat')
    return this.f.content.length
  }

  async close (): Promise<void> {
    this.closed = true
  }
}
