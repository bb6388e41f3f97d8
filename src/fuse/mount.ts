import Fuse from 'fuse-native'
import { LogdiskError } from '../errors'
import type { Store } from '../store'
import type { Logger } from '../store/logger'
import { imageOps } from './image-ops'

export interface Mounted {
  readonly mountpoint: string
  openHandles (image?: string): number
  /** Throws BUSY while an image is open (a loop device still attached). */
  assertIdle (): void
  /**
   * Unmounts; refuses with BUSY while an image is open (a loop device still attached), unless
   * `force`: then the mount is detached anyway (lazily) and I/O on the open images fails.
   */
  unmount (force?: boolean): Promise<void>
}

/**
 * Mounts the image folder with fuse-native. Options, and why (see native-notes/fuse-native.md):
 * - timeout: false: fuse-native otherwise answers ETIMEDOUT to any op slower than 15 s, which
 *   a loaded disk can be; the kernel would see an I/O error.
 * - big_writes,max_write=131072 ride in `fsname`, which fuse-native splices unescaped into -o:
 *   fuse-native has no option for them, and without them writes arrive 4 KiB at a time.
 * - direct_io: the kernel does not cache current.img a second time above the loop device.
 * - force: a stale mount left by a crashed daemon (ENOTCONN) is unmounted first.
 */
export function mountImages (store: Store, mountpoint: string, log: Logger): Promise<Mounted> {
  if (store.dir.includes(',')) {
    return Promise.reject(new LogdiskError('BAD_ARGUMENT', `store path ${store.dir} contains a comma, which FUSE mount options cannot carry; move the store`))
  }
  const { ops, openHandles } = imageOps(store, log)
  const fuse = new Fuse(mountpoint, ops, {
    timeout: false,
    maxRead: 131072,
    force: true,
    mkdir: true,
    fsname: `logdisk:${store.dir},subtype=logdisk,big_writes,max_write=131072,direct_io`
  })
  return new Promise((resolve, reject) => {
    fuse.mount((err: Error | null) => {
      if (err) return reject(new LogdiskError('IO', `cannot mount at ${mountpoint}: ${err.message}`, err))
      const assertIdle = (): void => {
        if (openHandles() > 0) {
          throw new LogdiskError('BUSY', `${mountpoint} is busy: an image is still open (a loop device? see losetup -a); detach it, then unmount`)
        }
      }
      resolve({
        mountpoint,
        openHandles,
        assertIdle,
        unmount (force = false) {
          try {
            if (!force) assertIdle()
          } catch (err) {
            return Promise.reject(err)
          }
          return new Promise<void>((resolve, reject) => {
            fuse.unmount((err: Error | null) => err ? reject(new LogdiskError('BUSY', `cannot unmount ${mountpoint}: ${err.message}`, err)) : resolve())
          })
        }
      })
    })
  })
}
