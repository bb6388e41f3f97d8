import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { LogdiskError } from '../errors'
import type { Store } from '../store'
import type { Logger } from '../store/logger'
import { mountDevFuse } from './devfuse/mount'
import { mountFuseNative } from './fuse-native'
import { ImageFolder, type Folder } from './image-ops'
import type { Session, TransportName } from './session'

export type { TransportName } from './session'
export const TRANSPORTS: readonly TransportName[] = ['devfuse', 'fuse-native']

export interface Mounted {
  readonly mountpoint: string
  readonly transport: TransportName
  openHandles (image?: string): number
  /** Opens of `image` fail with EBUSY until the returned release is called. */
  holdImage (image: string): () => void
  /** Throws BUSY while an image is open (a loop device still attached). */
  assertIdle (): void
  /**
   * Unmounts; refuses with BUSY while an image is open (a loop device still attached), unless
   * `force`: then the mount is detached anyway (lazily) and I/O on the open images fails.
   */
  unmount (force?: boolean): Promise<void>
  /** Resolves if the mount ends by itself (umount from outside, DESTROY); see Session.ended. */
  readonly ended: Promise<void>
  /**
   * The images' sizes changed (a resize): the kernel learns them now, so that `losetup -c`
   * right after the resize sees the new size (see Session.attributesChanged).
   */
  attributesChanged (): Promise<void>
}

/**
 * Which transport serves a mount: the one asked for (`--transport`, or LOGDISK_TRANSPORT),
 * else the /dev/fuse server on Linux as root, else fuse-native (non-root mounts, macOS).
 */
export function chooseTransport (asked?: string): { transport: TransportName, why: string } {
  const wanted = asked ?? process.env.LOGDISK_TRANSPORT
  if (wanted !== undefined && wanted !== '' && wanted !== 'auto') {
    if (!(TRANSPORTS as readonly string[]).includes(wanted)) {
      throw new LogdiskError('BAD_ARGUMENT', `unknown transport ${JSON.stringify(wanted)}; use one of ${TRANSPORTS.join(', ')} or auto`)
    }
    return { transport: wanted as TransportName, why: asked !== undefined ? 'asked for' : 'LOGDISK_TRANSPORT' }
  }
  if (process.platform !== 'linux') return { transport: 'fuse-native', why: 'not Linux' }
  if (process.getuid?.() !== 0) return { transport: 'fuse-native', why: 'not root (mount(2) needs root; fusermount cannot hand a /dev/fuse fd to Node)' }
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK)
  } catch {
    return { transport: 'fuse-native', why: '/dev/fuse is not accessible' }
  }
  return { transport: 'devfuse', why: 'Linux, root' }
}

export interface MountOptions {
  /** devfuse, fuse-native or auto (the default: chooseTransport). */
  transport?: string
  faults?: ReadonlySet<string>
  /** FUSE allow_other: users other than the daemon's may open the images. */
  allowOther?: boolean
  /** current.img read-only too (and the mount itself ro). */
  readOnly?: boolean
  /** Wraps the image folder before a transport serves it (the daemon's metrics). */
  wrap?: (folder: Folder) => Folder
}

/** Serves the store's images at `mountpoint` with the chosen transport. */
export async function mountImages (store: Store, mountpoint: string, log: Logger, opts: MountOptions = {}): Promise<Mounted> {
  const { transport, why } = chooseTransport(opts.transport)
  const images = new ImageFolder(store, log, { readOnly: opts.readOnly })
  const folder = opts.wrap ? opts.wrap(images) : images
  const fsname = `logdisk:${store.dir}`
  const extra = [...(opts.allowOther ? ['allow_other'] : []), ...(opts.readOnly ? ['ro'] : [])]
  let session: Session
  if (transport === 'devfuse') {
    session = await mountDevFuse(folder, mountpoint, { fsname, subtype: 'logdisk', log, faults: opts.faults, extraOptions: extra })
  } else {
    session = await mountFuseNative(folder, mountpoint, fsname, extra)
  }
  log.info({ transport, why }, 'FUSE transport')
  const assertIdle = (): void => {
    if (folder.openHandles() > 0) {
      throw new LogdiskError('BUSY', `${mountpoint} is busy: an image is still open (a loop device? see losetup -a); detach it, then unmount`)
    }
  }
  return {
    mountpoint,
    transport,
    openHandles: image => folder.openHandles(image),
    holdImage: image => images.holdImage(image),
    assertIdle,
    ended: session.ended,
    async attributesChanged () {
      session.attributesChanged()
      // The kernel takes an inode's size from GETATTR alone, and losetup -c reads that size
      // without asking: dropping the cached attributes is not enough until someone stats the
      // image. Stat each now, from the thread pool (this event loop answers the GETATTR).
      for (const name of folder.list()) await fsp.stat(path.join(mountpoint, name)).catch(() => undefined)
    },
    async unmount (force = false) {
      if (!force) assertIdle()
      // LOGDISK_FAULTS=unmount-fails: the transport's detach fails (as a fusermount that fails would).
      if (opts.faults?.has('unmount-fails')) throw new LogdiskError('IO', `cannot unmount ${mountpoint}: fault injection (unmount-fails)`)
      // LOGDISK_FAULTS=unmount-slow: the detach takes 1.5 s longer (a kernel slow to release the mount).
      if (opts.faults?.has('unmount-slow')) await new Promise(resolve => setTimeout(resolve, 1500))
      await session.unmount()
    }
  }
}
