import { addonPath, loadAddon } from './native-addon'

/**
 * Dropping a file's clean pages from the page cache (posix_fadvise POSIX_FADV_DONTNEED),
 * through the small addon in native/page-cache.c: Node has no binding for it. Built by `make
 * build` (scripts/build-native.mjs) when a C compiler is there; without it nothing is dropped
 * and everything works as before, only slower under sequential writes on a VM whose balloon
 * reports free memory to the host (native-notes/page-cache.md has the measurements).
 */
interface Addon {
  dropCache: (fd: number, offset: number, length: number, done: (errno: number) => void) => void
  trimHeap?: (done: (released: number) => void) => void
  /** Missing in an addon built before it had it. */
  readCached?: (fd: number, buf: Buffer, offset: number, length: number, position: number) => number
  /** Missing in an addon built before it had it. */
  warmCache?: (fd: number, offset: number, length: number, done: (errno: number) => void) => void
}

/** Where scripts/build-native.mjs puts the addon: <package>/build/page-cache.node. */
export const PAGE_CACHE_ADDON = addonPath('page-cache')

const loaded = loadAddon<Addon>('page-cache')
const addon = process.env.LOGDISK_KEEP_PAGE_CACHE === '1' ? undefined : loaded

/** Whether dropCachedPages does anything here (the addon is built and loaded). */
export const canDropCachedPages = addon !== undefined

/**
 * preadv2(RWF_NOWAIT) on the calling thread (native/page-cache.c readCached): reads only what
 * the page cache holds, never waiting for a disk. Returns the bytes read (fewer than asked or
 * 0: the rest is not cached) or -errno. Undefined without the addon, or with
 * LOGDISK_READ_CACHED=0 (every read then goes through the thread pool, as before).
 */
export const readCached = process.env.LOGDISK_READ_CACHED === '0' ? undefined : loaded?.readCached

/**
 * posix_fadvise(WILLNEED) on the thread pool (native/page-cache.c warmCache): the kernel reads
 * the range into the page cache in the background. Undefined without the addon, or with
 * LOGDISK_WARM_SEGMENTS=0 (src/store/segment-warmer.ts says when the store asks).
 */
const warmCache = process.env.LOGDISK_WARM_SEGMENTS === '0' ? undefined : loaded?.warmCache

/** Whether warmCachedPages does anything here. */
export const canWarmCachedPages = warmCache !== undefined

/** Asks the kernel to read `fd`'s range (the whole file: `length` 0) into the page cache; resolves the errno (0: asked). */
export function warmCachedPages (fd: number, offset = 0, length = 0): Promise<number> {
  if (warmCache === undefined) return Promise.resolve(0)
  return new Promise(resolve => { warmCache(fd, offset, length, resolve) })
}

/**
 * Asks the kernel to drop the cached pages of `fd` (the whole file: `length` 0). Advisory: it
 * changes no byte, dirty pages are not dropped (only clean ones), and a failure is only
 * reported back (the errno), never thrown. Runs on the libuv thread pool.
 */
export function dropCachedPages (fd: number, offset = 0, length = 0): Promise<number> {
  if (addon === undefined) return Promise.resolve(0)
  return new Promise(resolve => { addon.dropCache(fd, offset, length, resolve) })
}

/**
 * glibc's malloc_trim(0) on the thread pool: freed heap memory goes back to the system.
 * Resolves whether any did; false without the addon (or an addon built before it had this).
 * A process concern: the daemon calls it (src/daemon/heap-trim.ts), the store never does.
 */
export function trimHeap (): Promise<boolean> {
  const trim = addon?.trimHeap
  if (trim === undefined) return Promise.resolve(false)
  return new Promise(resolve => { trim(released => resolve(released === 1)) })
}
