import Fuse from 'fuse-native'
import { LogdiskError } from '../errors'
import { Errno, toErrno } from './errno'
import type { Folder } from './image-ops'
import type { Session } from './session'

type Cb = (...args: any[]) => void

/** fuse-native speaks paths: "/current.img" -> "current.img", "/" -> undefined. */
function nameOf (p: string): string | undefined {
  return p === '/' ? undefined : p.slice(1)
}

/** Wraps Folder as fuse-native's path-based callback operations, errors through toErrno. */
export function fuseNativeOps (folder: Folder): Record<string, (...args: any[]) => void> {
  const attrOf = (p: string) => {
    const a = folder.attr(nameOf(p))
    const time = new Date(a.timeMs)
    return a.dir
      ? { mode: a.mode, size: a.size, nlink: a.nlink, uid: folder.uid, gid: folder.gid, mtime: time, atime: time, ctime: time }
      : { mode: a.mode, size: a.size, nlink: a.nlink, uid: folder.uid, gid: folder.gid, blksize: a.blockBytes, blocks: Math.ceil(a.size / 512), mtime: time, atime: time, ctime: time }
  }
  const sync = (cb: Cb, fn: () => unknown) => {
    let out: unknown
    try {
      out = fn()
    } catch (err) {
      return cb(toErrno(err))
    }
    cb(0, out)
  }
  const later = (cb: Cb, p: Promise<unknown>, ok: (v: any) => unknown[] = () => [0]) => {
    p.then(v => cb(...ok(v)), err => cb(toErrno(err)))
  }
  const ops = {
    readdir (p: string, cb: Cb) {
      if (p !== '/') return cb(Errno.ENOENT)
      cb(0, folder.list())
    },
    getattr (p: string, cb: Cb) { sync(cb, () => attrOf(p)) },
    fgetattr (p: string, _fd: number, cb: Cb) { sync(cb, () => attrOf(p)) },
    access (p: string, mask: number, cb: Cb) { sync(cb, () => folder.access(nameOf(p), mask)) },
    open (p: string, flags: number, cb: Cb) {
      const name = nameOf(p)
      if (name === undefined) return cb(Errno.EISDIR)
      sync(cb, () => folder.open(name, flags).id)
    },
    release (_p: string, fd: number, cb: Cb) {
      try { folder.release(folder.handle(fd)) } catch { /* already released */ }
      cb(0)
    },
    read (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      try {
        later(cb, folder.read(folder.handle(fd), pos, buf.subarray(0, len)), n => [n])
      } catch (err) { cb(toErrno(err)) }
    },
    write (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) {
      try {
        later(cb, folder.write(folder.handle(fd), pos, buf.subarray(0, len)), n => [n])
      } catch (err) { cb(toErrno(err)) }
    },
    fsync (_p: string, _datasync: boolean, fd: number, cb: Cb) {
      try { later(cb, folder.fsync(folder.handle(fd))) } catch (err) { cb(toErrno(err)) }
    },
    flush (_p: string, fd: number, cb: Cb) {
      try { later(cb, folder.flush(folder.handle(fd))) } catch (err) { cb(toErrno(err)) }
    },
    truncate (p: string, size: number, cb: Cb) {
      const name = nameOf(p)
      if (name === undefined) return cb(Errno.EISDIR)
      sync(cb, () => folder.truncate(name, size))
    },
    ftruncate (p: string, _fd: number, size: number, cb: Cb) { ops.truncate(p, size, cb) },
    utimens (p: string, _atime: unknown, _mtime: unknown, cb: Cb) {
      const name = nameOf(p)
      sync(cb, () => name === undefined ? undefined : folder.utimens(name))
    },
    chmod (p: string, _mode: number, cb: Cb) { sync(cb, () => folder.chmod(nameOf(p))) },
    chown (p: string, _uid: number, _gid: number, cb: Cb) { sync(cb, () => folder.chown(nameOf(p))) },
    statfs (_p: string, cb: Cb) {
      sync(cb, () => ({ ...folder.statfs(), favail: 0, fsid: 0, flag: 0 }))
    }
  }
  return ops
}

/**
 * Mounts a folder with fuse-native (libfuse 2.9, protocol 7.19): the fallback transport, and
 * the only one for non-root mounts and macOS. Options, and why (native-notes/fuse-native.md):
 * - timeout: false: fuse-native otherwise answers ETIMEDOUT to any op slower than 15 s, which
 *   a loaded disk can be; the kernel would see an I/O error.
 * - big_writes,max_write=131072 ride in `fsname`, which fuse-native splices unescaped into -o:
 *   fuse-native has no option for them, and without them writes arrive 4 KiB at a time.
 * - direct_io: the kernel does not cache current.img a second time above the loop device.
 * - force: a stale mount left by a crashed daemon (ENOTCONN) is unmounted first.
 * fuse-native has no FALLOCATE operation: libfuse answers ENOSYS and the kernel tells callers
 * EOPNOTSUPP (fstrim: "the discard operation is not supported").
 */
export function mountFuseNative (folder: Folder, mountpoint: string, fsname: string, extraOptions: readonly string[] = []): Promise<Session> {
  if (fsname.includes(',')) {
    return Promise.reject(new LogdiskError('BAD_ARGUMENT', `${fsname} contains a comma, which fuse-native's mount options cannot carry; move the store`))
  }
  const fuse = new Fuse(mountpoint, fuseNativeOps(folder), {
    timeout: false,
    maxRead: 131072,
    force: true,
    mkdir: true,
    fsname: [`${fsname},subtype=logdisk,big_writes,max_write=131072,direct_io`, ...extraOptions].join(',')
  })
  return new Promise((resolve, reject) => {
    fuse.mount((err: Error | null) => {
      if (err) return reject(new LogdiskError('IO', `cannot mount at ${mountpoint}: ${err.message}`, err))
      resolve({
        transport: 'fuse-native',
        ended: new Promise<void>(() => { /* fuse-native does not tell */ }),
        attributesChanged: () => { /* no notify in libfuse 2.9's high-level API: 1 s attribute cache */ },
        unmount: () => new Promise<void>((resolve, reject) => {
          fuse.unmount((err: Error | null) => err ? reject(new LogdiskError('IO', `cannot unmount ${mountpoint}: ${err.message.trim().split('\n')[0]}`, err)) : resolve())
        })
      })
    })
  })
}
