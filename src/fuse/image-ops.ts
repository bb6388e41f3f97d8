import Fuse from 'fuse-native'
import { LogdiskError } from '../errors'
import type { Store } from '../store'
import type { Logger } from '../store/logger'
import { Errno, toErrno } from './errno'

/**
 * FUSE operations for a folder of disk images: `current.img` (read-write) and, later, one
 * read-only image per snapshot. Thin: every op calls the store and maps errors with toErrno.
 */
export const CURRENT_IMAGE = 'current.img'

type Cb = (...args: any[]) => void

export interface ImageOps {
  ops: Record<string, (...args: any[]) => void>
  /** Image handles open right now (a loop device keeps one open). */
  openHandles (): number
}

export function imageOps (store: Store, log: Logger): ImageOps {
  const started = new Date()
  let handles = 0
  let nextFd = 1

  const dirStat = { mode: 0o40755, size: 4096, nlink: 2, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mtime: started, atime: started, ctime: started }
  const imageStat = () => ({
    mode: 0o100644, size: store.sizeBytes, nlink: 1, uid: dirStat.uid, gid: dirStat.gid,
    blksize: store.blockBytes, blocks: Math.ceil(store.sizeBytes / 512), mtime: started, atime: started, ctime: started
  })
  const isImage = (p: string): boolean => p === '/' + CURRENT_IMAGE
  const fail = (op: string, err: unknown): number => {
    const errno = toErrno(err)
    if (!(err instanceof LogdiskError) || err.code === 'CORRUPT' || err.code === 'IO') log.error({ op, err: (err as Error).message }, 'I/O error returned to the kernel')
    return errno
  }

  const ops = {
    readdir (p: string, cb: Cb) {
      if (p !== '/') return cb(Fuse.ENOENT)
      cb(0, [CURRENT_IMAGE])
    },
    getattr (p: string, cb: Cb) {
      if (p === '/') return cb(0, dirStat)
      if (isImage(p)) return cb(0, imageStat())
      cb(Fuse.ENOENT)
    },
    fgetattr (p: string, _fd: number, cb: Cb) {
      ops.getattr(p, cb)
    },
    open (p: string, _flags: number, cb: Cb) {
      if (!isImage(p)) return cb(Fuse.ENOENT)
      handles++
      cb(0, nextFd++)
    },
    release (_p: string, _fd: number, cb: Cb) {
      handles = Math.max(0, handles - 1)
      cb(0)
    },
    read (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      store.read(pos, len, buf).then(out => cb(out.length), err => cb(fail('read', err)))
    },
    write (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      store.write(pos, buf.subarray(0, len)).then(() => cb(len), err => cb(fail('write', err)))
    },
    fsync (_p: string, _datasync: boolean, _fd: number, cb: Cb) {
      store.flush().then(() => cb(0), err => cb(fail('fsync', err)))
    },
    flush (_p: string, _fd: number, cb: Cb) {
      store.flush().then(() => cb(0), err => cb(fail('flush', err)))
    },
    // The image has the volume's fixed size, as a block device does: resizing is refused.
    truncate (p: string, size: number, cb: Cb) {
      if (!isImage(p)) return cb(Fuse.ENOENT)
      cb(size === store.sizeBytes ? 0 : Errno.EPERM)
    },
    ftruncate (p: string, _fd: number, size: number, cb: Cb) {
      ops.truncate(p, size, cb)
    },
    utimens (_p: string, _atime: unknown, _mtime: unknown, cb: Cb) { cb(0) },
    chmod (_p: string, _mode: number, cb: Cb) { cb(Errno.EPERM) },
    chown (_p: string, _uid: number, _gid: number, cb: Cb) { cb(Errno.EPERM) },
    statfs (_p: string, cb: Cb) {
      const blocks = store.sizeBytes / store.blockBytes
      const free = Math.max(0, blocks - store.status().writtenBytes / store.blockBytes)
      cb(0, { bsize: store.blockBytes, frsize: store.blockBytes, blocks, bfree: free, bavail: free, files: 1, ffree: 0, favail: 0, fsid: 0, flag: 0, namemax: 255 })
    }
  }
  return { ops, openHandles: () => handles }
}
