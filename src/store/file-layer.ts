import fs from 'node:fs'
import { execFile } from 'node:child_process'
import { LogdiskError, fromSystemError } from '../errors'
import { canWarmCachedPages, dropCachedPages, readCached, warmCachedPages } from './page-cache'
import { makeDirs } from '../make-dirs'

/** Linux's EAGAIN: what readCached's preadv2(RWF_NOWAIT) answers for a range not in the page cache. */
const EAGAIN = 11

/**
 * The seam between the store and the disk. The store reaches segment files only through this
 * interface so that tests can swap in a simulated disk that drops unsynced writes on "crash"
 * (src/testing/sim-file-layer.ts, after TigerBeetle's testing storage).
 *
 * Contract: `writev` writes all bytes or throws; data is durable only after `datasync`;
 * a created or removed file is durable only after `syncDir` of its directory.
 */
export interface FileHandle {
  read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number>
  /**
   * The same read done at once on the calling thread (a synchronous read(2)), for a caller with
   * nothing else to do meanwhile (IoOptions.inline). Optional: a layer without it (the
   * mirrored handle) is always read through `read`.
   */
  readNow?: (buf: Buffer, bufOffset: number, length: number, position: number) => number
  /**
   * What of the range the page cache holds, read at once on the calling thread without
   * waiting for a disk (preadv2 RWF_NOWAIT): the bytes read, from 0 (nothing cached, or the
   * file system cannot tell) to `length`. Never throws: whatever went wrong, `read` of the
   * rest says. Optional, as readNow.
   */
  readCached?: (buf: Buffer, bufOffset: number, length: number, position: number) => number
  /** `writev` done at once on the calling thread (IoOptions.inline); optional as readNow. */
  writevNow?: (buffers: Buffer[], position: number) => void
  writev (buffers: Buffer[], position: number): Promise<void>
  datasync (): Promise<void>
  /**
   * Drops the file's clean pages from the page cache (advisory: no byte changes, never
   * throws). Optional: a layer without it keeps them. The log calls it for a sealed segment
   * once it is fdatasync'd (LogAppender.syncAll).
   */
  dropCache?: () => Promise<void>
  /**
   * Asks the kernel to read the whole file into the page cache in the background (advisory,
   * never throws). Optional: a layer without it reads as before. The reader calls it for a
   * segment whose small reads keep missing (segment-warmer.ts).
   */
  warmCache?: () => Promise<void>
  truncate (length: number): Promise<void>
  size (): Promise<number>
  close (): Promise<void>
}

/**
 * Reads into all of `buf` from `position`, as many read(2) calls as it takes; fewer bytes only
 * at the end of the file. Returns how many bytes were read.
 */
export async function readUpTo (handle: FileHandle, buf: Buffer, position: number): Promise<number> {
  let got = 0
  while (got < buf.length) {
    const n = await handle.read(buf, got, buf.length - got, position + got)
    if (n === 0) break
    got += n
  }
  return got
}

export interface FileLayer {
  /** Opens read-write; creates the file when `create` is set and it does not exist. */
  open (file: string, create: boolean): Promise<FileHandle>
  list (dir: string): Promise<string[]>
  remove (file: string): Promise<void>
  rename (from: string, to: string): Promise<void>
  mkdirp (dir: string): Promise<void>
  syncDir (dir: string): Promise<void>
  /** Frees the disk blocks of a byte range, which then reads as zeros (FALLOC_FL_PUNCH_HOLE). */
  punchHole (file: string, offset: number, length: number): Promise<void>
  /** punchHole for many ranges of one file at once (a layer without it gets one call per range). */
  punchHoles?: (file: string, ranges: Array<[offset: number, length: number]>) => Promise<void>
  /**
   * Room on the filesystem holding `dir`: bytes this process may still write there and the
   * filesystem's size (statfs). undefined, or a layer without it: unknown (the writes say).
   * The fetch-back cache (reader.ts) keeps the store's filesystem above a reserve with it.
   */
  room?: (dir: string) => Promise<FilesystemRoom | undefined>
}

/** What FileLayer.room answers. */
export interface FilesystemRoom { freeBytes: number, totalBytes: number }

/** `layer.room(dir)` when the layer has it and it answers, else undefined. */
export async function roomOf (layer: FileLayer, dir: string): Promise<FilesystemRoom | undefined> {
  if (!layer.room) return undefined
  try {
    return await layer.room(dir)
  } catch {
    return undefined
  }
}

/** Punches `ranges` of `file` through the layer's batch call when it has one. */
export async function punchHoles (layer: FileLayer, file: string, ranges: Array<[offset: number, length: number]>): Promise<void> {
  if (ranges.length === 0) return
  if (layer.punchHoles) return layer.punchHoles(file, ranges)
  for (const [offset, length] of ranges) await layer.punchHole(file, offset, length)
}

/** Ranges per xfs_io process: its arguments stay far below the kernel's limit. */
const XFS_IO_RANGES = 2048
let xfsIoMissing = false

/**
 * Runs a command; fails with IO `<what>: <what it said>` when it exits non-zero or says
 * anything on stderr (the spawn error, ENOENT for a missing command, is the cause).
 */
function run (cmd: string, args: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, _out, stderr) => {
      // One line: each distinct message once (xfs_io repeats one per failed range).
      const said = [...new Set(String(stderr).split('\n').map(l => l.trim()).filter(l => l !== ''))].join('; ')
      if (err !== null || said !== '') reject(new LogdiskError('IO', `${what}: ${said || err?.message}`, err ?? undefined))
      else resolve()
    })
  })
}

function call<T> (what: string, fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, value) => err ? reject(fromSystemError(err, what)) : resolve(value))
  })
}

/** Raw fds with callback fs calls: measurably faster on the hot path than fs.promises handles. */
class NodeFileHandle implements FileHandle {
  private closed = false

  /** `readOnly`: opened for reading only (its filesystem is read-only: nodeFileLayer.open). */
  constructor (private readonly fd: number, private readonly file: string, private readonly readOnly = false) {}

  /**
   * A write to a file opened for reading only: said as such, not as the EBADF the kernel
   * gives (a store whose newest segment sat on a read-only volume failed to open with
   * "EBADF: bad file descriptor": found by a hostile test).
   */
  private refuseWrite (): LogdiskError {
    return new LogdiskError('READ_ONLY', `write ${this.file}: its filesystem is read-only; make it writable again, or move the store's segments off that pool volume (logdisk pool remove) from a copy where it is writable`)
  }

  read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    return call(`read ${this.file}`, cb => fs.read(this.fd, buf, bufOffset, length, position, cb))
  }

  readNow (buf: Buffer, bufOffset: number, length: number, position: number): number {
    try {
      return fs.readSync(this.fd, buf, bufOffset, length, position)
    } catch (err) {
      throw fromSystemError(err as NodeJS.ErrnoException, `read ${this.file}`)
    }
  }

  readCached (buf: Buffer, bufOffset: number, length: number, position: number): number {
    if (!this.cachedReads) return 0
    const n = readCached!(this.fd, buf, bufOffset, length, position)
    if (n >= 0) return n
    // EAGAIN: not cached. Anything else (EOPNOTSUPP: a file system that cannot say; EINVAL:
    // a kernel before 4.14) will not change for this file: stop asking.
    if (n !== -EAGAIN) this.cachedReads = false
    return 0
  }

  /** Whether readCached still asks the kernel (see there). */
  private cachedReads = readCached !== undefined

  writevNow (buffers: Buffer[], position: number): void {
    if (this.readOnly) throw this.refuseWrite()
    let pending = buffers
    while (pending.length > 0) {
      let written: number
      try {
        written = fs.writevSync(this.fd, pending, position)
      } catch (err) {
        throw fromSystemError(err as NodeJS.ErrnoException, `write ${this.file}`)
      }
      position += written
      pending = skipBytes(pending, written)
    }
  }

  async writev (buffers: Buffer[], position: number): Promise<void> {
    if (this.readOnly) throw this.refuseWrite()
    let pending = buffers
    while (pending.length > 0) {
      const written = await call<number>(`write ${this.file}`, cb => fs.writev(this.fd, pending, position, cb))
      position += written
      pending = skipBytes(pending, written)
    }
  }

  datasync (): Promise<void> {
    return call(`fdatasync ${this.file}`, cb => fs.fdatasync(this.fd, err => cb(err, undefined)))
  }

  async dropCache (): Promise<void> {
    // Once closed, the descriptor's number may name another file: no advice through it.
    if (!this.closed) await dropCachedPages(this.fd)
  }

  readonly warmCache = canWarmCachedPages
    ? async (): Promise<void> => { if (!this.closed) await warmCachedPages(this.fd) } // as dropCache: never through a closed number
    : undefined

  truncate (length: number): Promise<void> {
    if (this.readOnly) return Promise.reject(this.refuseWrite())
    return call(`truncate ${this.file}`, cb => fs.ftruncate(this.fd, length, err => cb(err, undefined)))
  }

  async size (): Promise<number> {
    const st = await call<fs.Stats>(`stat ${this.file}`, cb => fs.fstat(this.fd, cb))
    return st.size
  }

  close (): Promise<void> {
    this.closed = true
    return call(`close ${this.file}`, cb => fs.close(this.fd, err => cb(err, undefined)))
  }
}

/** Drops the first `n` bytes from a list of buffers (after a short writev). */
function skipBytes (buffers: Buffer[], n: number): Buffer[] {
  const rest: Buffer[] = []
  for (const b of buffers) {
    if (n >= b.length) { n -= b.length; continue }
    rest.push(n > 0 ? b.subarray(n) : b)
    n = 0
  }
  return rest
}

export const nodeFileLayer: FileLayer = {
  async open (file, create) {
    const flags = create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR
    try {
      const fd = await call<number>(`open ${file}`, cb => fs.open(file, flags, 0o600, cb))
      return new NodeFileHandle(fd, file)
    } catch (err) {
      // A file on a read-only filesystem (a pool volume gone read-only) still reads.
      if (create || !(err instanceof LogdiskError) || err.code !== 'READ_ONLY') throw err
      const fd = await call<number>(`open ${file}`, cb => fs.open(file, fs.constants.O_RDONLY, cb))
      return new NodeFileHandle(fd, file, true)
    }
  },
  async list (dir) {
    try {
      return await fs.promises.readdir(dir)
    } catch (err) {
      throw fromSystemError(err, `list ${dir}`)
    }
  },
  async remove (file) {
    try {
      // unlink, not rm({ force }): that turned an unlink's EPERM (an immutable directory) into a
      // walk of the file as a directory, and the error said "ENOTDIR ... scandir" (helper-75's D5).
      await fs.promises.unlink(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw fromSystemError(err, `remove ${file}`)
    }
  },
  async rename (from, to) {
    try {
      await fs.promises.rename(from, to)
    } catch (err) {
      throw fromSystemError(err, `rename ${from}`)
    }
  },
  async mkdirp (dir) {
    try {
      makeDirs(dir)
    } catch (err) {
      throw fromSystemError(err, `mkdir ${dir}`)
    }
  },
  // Node has no fallocate(): util-linux's fallocate(1) does it, run asynchronously (an
  // execSync while mounted would deadlock the mount). See native-notes/hole-punching.md.
  punchHole (file, offset, length) {
    return run('fallocate', ['--punch-hole', '--keep-size', '--offset', String(offset), '--length', String(length), file], `fallocate --punch-hole ${file}`)
  },
  // One process per file, not per range: a compaction after random 4 KiB writes punches
  // thousands of small runs, and spawning fallocate(1) for each from the daemon cost 10-25 ms
  // of its CPU apiece (measured: 2,279 runs, 22 s of the daemon's 45 s profiled, a 56 s
  // compaction). xfs_io (xfsprogs) takes any number of fpunch commands (FALLOC_FL_PUNCH_HOLE |
  // KEEP_SIZE, on any filesystem that has it) and fails with a message when one fails.
  async punchHoles (file, ranges) {
    if (!xfsIoMissing) {
      try {
        for (let i = 0; i < ranges.length; i += XFS_IO_RANGES) {
          await run('xfs_io', [...ranges.slice(i, i + XFS_IO_RANGES).flatMap(([offset, length]) => ['-c', `fpunch ${offset} ${length}`]), file], `xfs_io fpunch ${file}`)
        }
        return
      } catch (err) {
        if ((err as { cause?: NodeJS.ErrnoException }).cause?.code !== 'ENOENT') throw err
        xfsIoMissing = true // not installed: one fallocate(1) per range
      }
    }
    for (const [offset, length] of ranges) await nodeFileLayer.punchHole(file, offset, length)
  },
  async room (dir) {
    try {
      const st = await fs.promises.statfs(dir)
      return { freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize }
    } catch {
      return undefined
    }
  },
  async syncDir (dir) {
    const fd = await call<number>(`open ${dir}`, cb => fs.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY, cb))
    try {
      await call(`fsync ${dir}`, cb => fs.fsync(fd, err => cb(err, undefined)))
    } finally {
      fs.closeSync(fd)
    }
  }
}

/** The temporary name publishFile writes `file` under before renaming it. */
export const publishTempOf = (file: string): string => `${file}.tmp`

/**
 * Writes `file` whole and atomically: a temporary file (publishTempOf), fsync, rename, fsync
 * of `dir`. `data` may come in parts, written with one writev.
 */
export async function publishFile (layer: FileLayer, file: string, dir: string, data: Buffer | Buffer[]): Promise<void> {
  const tmp = publishTempOf(file)
  const h = await layer.open(tmp, true)
  try {
    await h.truncate(0)
    await h.writev(Array.isArray(data) ? data : [data], 0)
    await h.datasync()
  } finally {
    await h.close()
  }
  await layer.rename(tmp, file)
  await layer.syncDir(dir)
}
