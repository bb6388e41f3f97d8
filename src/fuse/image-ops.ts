import Fuse from 'fuse-native'
import { LogdiskError } from '../errors'
import type { Store } from '../store'
import type { Logger } from '../store/logger'
import { Errno, toErrno } from './errno'

/**
 * FUSE operations for a folder of disk images: `current.img` (read-write) and one read-only
 * `<name>.img` per snapshot, appearing and disappearing as snapshots come and go. Thin: every
 * op calls the store and maps errors with toErrno.
 */
export const CURRENT_IMAGE = 'current.img'

const O_ACCMODE = 3
const O_RDONLY = 0

type Cb = (...args: any[]) => void

export interface ImageOps {
  ops: Record<string, (...args: any[]) => void>
  /** Handles open right now on one image, or on all (a loop device keeps one open). */
  openHandles (image?: string): number
}

/** The snapshot an image path names, or undefined for current.img and unknown names. */
function snapshotName (p: string): string | undefined {
  if (!p.startsWith('/') || !p.endsWith('.img') || p === '/' + CURRENT_IMAGE) return undefined
  return p.slice(1, -4)
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

export function imageOps (store: Store, log: Logger): ImageOps {
  const started = new Date()
  const handles = new Map<string, number>() // image name -> open handles
  let nextFd = 1
  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0

  const dirStat = { mode: 0o40755, size: 4096, nlink: 2, uid, gid, mtime: started, atime: started, ctime: started }
  const imageStat = (mode: number, time: Date) => ({
    mode, size: store.sizeBytes, nlink: 1, uid, gid,
    blksize: store.blockBytes, blocks: Math.ceil(store.sizeBytes / 512), mtime: time, atime: time, ctime: time
  })
  const isCurrent = (p: string): boolean => p === '/' + CURRENT_IMAGE
  const snapshotOf = (p: string) => {
    const name = snapshotName(p)
    return name === undefined ? undefined : store.snapshots().find(s => s.name === name)
  }
  const fail = (op: string, err: unknown): number => {
    if (!(err instanceof LogdiskError) || err.code === 'CORRUPT' || err.code === 'IO') log.error({ op, err: (err as Error).message }, 'I/O error returned to the kernel')
    return toErrno(err)
  }

  const ops = {
    readdir (p: string, cb: Cb) {
      if (p !== '/') return cb(Fuse.ENOENT)
      cb(0, [CURRENT_IMAGE, ...store.snapshots().map(s => `${s.name}.img`)])
    },
    getattr (p: string, cb: Cb) {
      if (p === '/') return cb(0, dirStat)
      if (isCurrent(p)) return cb(0, imageStat(0o100644, started))
      const snap = snapshotOf(p)
      if (snap) return cb(0, imageStat(0o100444, new Date(snap.timeMs)))
      cb(Fuse.ENOENT)
    },
    fgetattr (p: string, _fd: number, cb: Cb) {
      ops.getattr(p, cb)
    },
    open (p: string, flags: number, cb: Cb) {
      if (!isCurrent(p)) {
        if (!snapshotOf(p)) return cb(Fuse.ENOENT)
        if ((flags & O_ACCMODE) !== O_RDONLY) return cb(Errno.EROFS)
      }
      const image = p.slice(1)
      handles.set(image, (handles.get(image) ?? 0) + 1)
      cb(0, nextFd++)
    },
    release (p: string, _fd: number, cb: Cb) {
      const image = p.slice(1)
      const n = (handles.get(image) ?? 1) - 1
      if (n > 0) handles.set(image, n)
      else handles.delete(image)
      cb(0)
    },
    read (p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      const name = isCurrent(p) ? undefined : snapshotName(p)
      const reading = name === undefined ? store.read(pos, len, buf) : store.readSnapshot(name, pos, len, buf)
      reading.then(out => cb(out.length), err => cb(fail('read', err)))
    },
    write (p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      if (!isCurrent(p)) return cb(Errno.EROFS)
      store.write(pos, buf.subarray(0, len)).then(() => cb(len), err => cb(fail('write', err)))
    },
    fsync (p: string, _datasync: boolean, _fd: number, cb: Cb) {
      if (!isCurrent(p)) return cb(0)
      store.flush().then(() => cb(0), err => cb(fail('fsync', err)))
    },
    flush (p: string, _fd: number, cb: Cb) {
      if (!isCurrent(p)) return cb(0)
      store.flush().then(() => cb(0), err => cb(fail('flush', err)))
    },
    // Images have the volume's fixed size, as a block device does: resizing is refused.
    truncate (p: string, size: number, cb: Cb) {
      if (isCurrent(p)) return cb(size === store.sizeBytes ? 0 : Errno.EPERM)
      cb(snapshotOf(p) ? Errno.EROFS : Fuse.ENOENT)
    },
    ftruncate (p: string, _fd: number, size: number, cb: Cb) {
      ops.truncate(p, size, cb)
    },
    utimens (p: string, _atime: unknown, _mtime: unknown, cb: Cb) { cb(isCurrent(p) ? 0 : Errno.EROFS) },
    chmod (_p: string, _mode: number, cb: Cb) { cb(Errno.EPERM) },
    chown (_p: string, _uid: number, _gid: number, cb: Cb) { cb(Errno.EPERM) },
    statfs (_p: string, cb: Cb) {
      const { unitBytes, blocks, free } = statfsCounts(store.sizeBytes, store.status().writtenBytes, store.blockBytes)
      cb(0, { bsize: unitBytes, frsize: unitBytes, blocks, bfree: free, bavail: free, files: 1, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 })
    }
  }
  const openHandles = (image?: string): number => {
    if (image !== undefined) return handles.get(image) ?? 0
    let n = 0
    for (const v of handles.values()) n += v
    return n
  }
  return { ops, openHandles }
}
