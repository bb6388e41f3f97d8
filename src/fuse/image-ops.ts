import { LogdiskError } from '../errors'
import type { IoOptions, Store } from '../store'
import type { Logger } from '../store/logger'
import { Errno, FsError, toErrno } from './errno'

/**
 * The image operations every FUSE transport serves: a folder of disk images, `current.img`
 * (read-write) and one read-only `<name>.img` per snapshot, appearing and disappearing as
 * snapshots come and go. Thin: every operation calls the store; failures are thrown as
 * FsError (an errno) or LogdiskError, and the transports turn both into errno with toErrno
 * (src/fuse/errno.ts), so fuse-native and the /dev/fuse server answer the same errno for the
 * same case. Names here are image names (`current.img`), never paths: a transport that speaks
 * paths (fuse-native) strips the leading slash, one that speaks inodes keeps a table.
 */
export const CURRENT_IMAGE = 'current.img'

export const O_ACCMODE = 3
export const O_RDONLY = 0

/** fallocate(2) modes, from linux/falloc.h. */
export const FALLOC_FL_KEEP_SIZE = 0x01
export const FALLOC_FL_PUNCH_HOLE = 0x02
export const FALLOC_FL_ZERO_RANGE = 0x10
export const FALLOC_FL_WRITE_ZEROES = 0x80

/** access(2) mask bits. */
const W_OK = 2

export interface NodeAttr {
  /** Identifies what the name stands for: a snapshot deleted and made again under the same name gets a new key. */
  key: string
  dir: boolean
  mode: number
  size: number
  /** Preferred I/O size (st_blksize): the store's block size. */
  blockBytes: number
  nlink: number
  timeMs: number
}

/** Largest count a statvfs field carries through fuse-native (it marshals them as uint32). */
const MAX_STATFS_COUNT = 2 ** 32 - 1

/**
 * statfs numbers for a volume of `sizeBytes` with `writtenBytes` in use: counted in units of
 * the block size, or of the smallest power-of-two multiple of it that keeps every count within
 * 32 bits (fuse-native passes f_blocks & co. as uint32: a 100 TiB volume in 4 KiB units would
 * wrap). df multiplies f_blocks by f_frsize, so the sizes it shows stay exact.
 */
export function statfsCounts (sizeBytes: number, writtenBytes: number, blockBytes: number): { unitBytes: number, blocks: number, free: number } {
  let unitBytes = blockBytes
  while (Math.floor(sizeBytes / unitBytes) > MAX_STATFS_COUNT) unitBytes *= 2
  const blocks = Math.floor(sizeBytes / unitBytes)
  const free = Math.min(blocks, Math.max(0, Math.floor((sizeBytes - writtenBytes) / unitBytes)))
  return { unitBytes, blocks, free }
}

export interface Statfs {
  bsize: number
  frsize: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  namemax: number
}

/** One open of one image. */
export interface ImageHandle {
  readonly id: number
  readonly image: string
  readonly writable: boolean
}

/**
 * What a transport needs from the folder it serves. ImageFolder is the product's; the
 * benchmark serves a raw file through the same interface (bench/passthrough-devfuse.mjs).
 * Every method throws FsError or LogdiskError; none blocks on the disk synchronously.
 */
export interface Folder {
  readonly uid: number
  readonly gid: number
  /** Names in the root directory, in listing order. */
  list (): string[]
  /** Attributes of the root (name undefined) or of one image; ENOENT if there is no such image. */
  attr (name?: string): NodeAttr
  access (name: string | undefined, mask: number): void
  open (name: string, flags: number): ImageHandle
  release (handle: ImageHandle): void
  /** Handle by id (fuse-native passes the id back as `fd`); EBADF if unknown. */
  handle (id: number): ImageHandle
  /**
   * Reads into `into` (its length is the request); resolves to bytes read, short at the end of
   * the image. `opts.inline`: the transport has no other request in flight (IoOptions), as for `write`.
   */
  read (handle: ImageHandle, pos: number, into: Buffer, opts?: IoOptions): Promise<number>
  /**
   * Writes `data` at `pos`. `blockCrcs`, when the transport computed them, are the CRC32C
   * of each of `data`'s blocks of `crcBlockBytes` (a block-aligned write only).
   */
  write (handle: ImageHandle, pos: number, data: Buffer, blockCrcs?: Uint32Array, opts?: IoOptions): Promise<number>
  /** The block size whose CRC32Cs `write` can take from the transport (0: none). */
  readonly crcBlockBytes?: number
  flush (handle: ImageHandle): Promise<void>
  fsync (handle: ImageHandle): Promise<void>
  fallocate (handle: ImageHandle, mode: number, offset: number, length: number): Promise<void>
  truncate (name: string, size: number): void
  utimens (name: string): void
  chmod (name: string | undefined): void
  chown (name: string | undefined): void
  statfs (): Statfs
  /** Handles open right now on one image, or on all (a loop device keeps one open). */
  openHandles (image?: string): number
  /** The kernel ends the session (FUSE_DESTROY): make everything durable. */
  destroy (): Promise<void>
}

export class ImageFolder implements Folder {
  readonly uid = process.getuid?.() ?? 0
  readonly gid = process.getgid?.() ?? 0
  private readonly started = Date.now()
  private readonly handles = new Map<number, ImageHandle>()
  private readonly perImage = new Map<string, number>()
  /** Images no open may reach now (holdImage), by how many holds. */
  private readonly held = new Map<string, number>()
  private nextId = 1

  private readonly readOnly: boolean

  constructor (private readonly store: Store, private readonly log: Logger, opts: { readOnly?: boolean } = {}) {
    this.readOnly = opts.readOnly === true
  }

  private fail (op: string, err: unknown): never {
    if (!(err instanceof LogdiskError || err instanceof FsError) || (err instanceof LogdiskError && (err.code === 'CORRUPT' || err.code === 'IO'))) {
      this.log.error({ op, err: (err as Error).message, errno: -toErrno(err) }, 'I/O error returned to the kernel')
    }
    throw err
  }

  /** The snapshot an image name stands for; undefined for current.img and unknown names. */
  private snapshotOf (name: string) {
    if (!name.endsWith('.img') || name === CURRENT_IMAGE) return undefined
    const snap = name.slice(0, -4)
    return this.store.snapshots().find(s => s.name === snap)
  }

  list (): string[] {
    return [CURRENT_IMAGE, ...this.store.snapshots().map(s => `${s.name}.img`)]
  }

  attr (name?: string): NodeAttr {
    const base = { blockBytes: this.store.blockBytes }
    if (name === undefined) return { ...base, key: '/', dir: true, mode: 0o40755, size: 4096, nlink: 2, timeMs: this.started }
    if (name === CURRENT_IMAGE) return { ...base, key: 'current', dir: false, mode: this.readOnly ? 0o100444 : 0o100644, size: this.store.sizeBytes, nlink: 1, timeMs: this.started }
    const snap = this.snapshotOf(name)
    if (!snap) throw new FsError(Errno.ENOENT)
    // The volume's size at the cut (a shrink since leaves the snapshot's filesystem whole).
    return { ...base, key: `snapshot:${snap.seq}`, dir: false, mode: 0o100444, size: this.store.snapshotSize(snap), nlink: 1, timeMs: snap.timeMs }
  }

  access (name: string | undefined, mask: number): void {
    const attr = this.attr(name)
    if ((mask & W_OK) !== 0 && !attr.dir && (name !== CURRENT_IMAGE || this.readOnly)) throw new FsError(Errno.EROFS)
  }

  open (name: string, flags: number): ImageHandle {
    const writable = (flags & O_ACCMODE) !== O_RDONLY
    if (name !== CURRENT_IMAGE) {
      if (!this.snapshotOf(name)) throw new FsError(Errno.ENOENT)
      if (writable) throw new FsError(Errno.EROFS)
    } else if (writable && this.readOnly) throw new FsError(Errno.EROFS)
    if (this.held.has(name)) throw new FsError(Errno.EBUSY)
    const handle = { id: this.nextId++, image: name, writable }
    this.handles.set(handle.id, handle)
    this.perImage.set(name, (this.perImage.get(name) ?? 0) + 1)
    return handle
  }

  release (handle: ImageHandle): void {
    if (!this.handles.delete(handle.id)) return
    const n = (this.perImage.get(handle.image) ?? 1) - 1
    if (n > 0) this.perImage.set(handle.image, n)
    else this.perImage.delete(handle.image)
  }

  handle (id: number): ImageHandle {
    const handle = this.handles.get(id)
    if (!handle) throw new FsError(Errno.EBADF)
    return handle
  }

  async read (handle: ImageHandle, pos: number, into: Buffer, opts?: IoOptions): Promise<number> {
    try {
      const out = handle.image === CURRENT_IMAGE
        ? await this.store.read(pos, into.length, into, opts)
        : await this.store.readSnapshot(handle.image.slice(0, -4), pos, into.length, into, opts)
      return out.length
    } catch (err) {
      return this.fail('read', err)
    }
  }

  get crcBlockBytes (): number {
    return this.store.blockBytes
  }

  async write (handle: ImageHandle, pos: number, data: Buffer, blockCrcs?: Uint32Array, opts?: IoOptions): Promise<number> {
    if (handle.image !== CURRENT_IMAGE || this.readOnly) throw new FsError(Errno.EROFS)
    try {
      await this.store.write(pos, data, blockCrcs, opts)
      return data.length
    } catch (err) {
      return this.fail('write', err)
    }
  }

  async flush (handle: ImageHandle): Promise<void> {
    if (handle.image !== CURRENT_IMAGE) return
    try {
      await this.store.flush()
    } catch (err) {
      this.fail('flush', err)
    }
  }

  fsync (handle: ImageHandle): Promise<void> {
    return this.flush(handle)
  }

  /**
   * FALLOCATE: PUNCH_HOLE|KEEP_SIZE (a loop device's discard), ZERO_RANGE and WRITE_ZEROES
   * (its write-zeroes) make the range read as zeros; the range is clipped to the image, which
   * never grows. Snapshot images refuse with EROFS; any other mode (plain allocation,
   * collapse, insert, unshare) with EOPNOTSUPP, as a filesystem without it would.
   */
  async fallocate (handle: ImageHandle, mode: number, offset: number, length: number): Promise<void> {
    if (handle.image !== CURRENT_IMAGE || this.readOnly) throw new FsError(Errno.EROFS)
    const zeroing = mode === (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ||
      (mode & ~FALLOC_FL_KEEP_SIZE) === FALLOC_FL_ZERO_RANGE ||
      (mode & ~FALLOC_FL_KEEP_SIZE) === FALLOC_FL_WRITE_ZEROES
    if (!zeroing) throw new FsError(Errno.EOPNOTSUPP, `fallocate mode 0x${mode.toString(16)} is not supported`)
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) throw new FsError(Errno.EINVAL)
    const size = this.store.sizeBytes
    if ((mode & FALLOC_FL_KEEP_SIZE) === 0 && offset + length > size) throw new FsError(Errno.EFBIG) // would grow the image
    const end = Math.min(size, offset + length)
    if (offset >= end) return
    try {
      await this.store.discard(offset, end - offset)
    } catch (err) {
      this.fail('fallocate', err)
    }
  }

  // Images have the volume's fixed size, as a block device does: resizing is refused.
  truncate (name: string, size: number): void {
    if (name === CURRENT_IMAGE) {
      if (size !== this.store.sizeBytes) throw new FsError(Errno.EPERM)
      return
    }
    this.attr(name) // ENOENT for unknown names
    throw new FsError(Errno.EROFS)
  }

  utimens (name: string): void {
    if (name === CURRENT_IMAGE) return
    this.attr(name)
    throw new FsError(Errno.EROFS)
  }

  chmod (): void { throw new FsError(Errno.EPERM) }
  chown (): void { throw new FsError(Errno.EPERM) }

  statfs (): Statfs {
    const { unitBytes, blocks, free } = statfsCounts(this.store.sizeBytes, this.store.status().writtenBytes, this.store.blockBytes)
    return { bsize: unitBytes, frsize: unitBytes, blocks, bfree: free, bavail: free, files: 1, ffree: 0, namemax: 255 }
  }

  /** Opens of `image` fail with EBUSY until the returned release is called (a receive writing it). */
  holdImage (image: string): () => void {
    this.held.set(image, (this.held.get(image) ?? 0) + 1)
    let released = false
    return () => {
      if (released) return
      released = true
      const n = (this.held.get(image) ?? 1) - 1
      if (n > 0) this.held.set(image, n)
      else this.held.delete(image)
    }
  }

  openHandles (image?: string): number {
    if (image !== undefined) return this.perImage.get(image) ?? 0
    let n = 0
    for (const v of this.perImage.values()) n += v
    return n
  }

  async destroy (): Promise<void> {
    await this.store.flush()
  }
}
