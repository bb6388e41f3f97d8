import fs from 'node:fs'
import os from 'node:os'

/** Misses of small reads in one segment before it is read whole into the page cache. */
export const WARM_AFTER_MISSES = 16
/**
 * A segment is not warmed again sooner than this: misses that race the reads a warm queued
 * (they land within a second at the disk's sequential speed) do not ask for it twice.
 */
export const WARM_AGAIN_AFTER_MS = 2000
/** The share of the machine's memory a warm always leaves free. */
export const WARM_RESERVE_SHARE = 1 / 8

/**
 * Which segments to read whole into the page cache (posix_fadvise WILLNEED), judged by the
 * small reads that missed it. A log scatters an image's blocks over the segments they were
 * written in, so random reads of an image whose data the page cache does not hold (after a
 * mount, a reboot, or the drop of a segment's pages once it is synced:
 * native-notes/page-cache.md) each wait for a disk request, and on a VM a request costs the
 * reader more than its bytes. Reading a segment that keeps missing in one go turns the rest
 * of its misses into hits at the disk's sequential speed.
 *
 * Only into free memory: a warm must leave WARM_RESERVE_SHARE of the machine's memory free,
 * counting the warms of the last WARM_AGAIN_AFTER_MS as taken (their pages may not be in
 * yet). So it never evicts anyone's cached pages to make room, and a working set larger than
 * memory cannot make it read segments over and over: once memory is full of cache, it stops.
 * A segment needs WARM_AFTER_MISSES misses first. Advisory only: the kernel reads the pages
 * in the background and evicts them as any clean page; nothing of the log changes.
 */
export class SegmentWarmer {
  private readonly misses = new Map<number, number>()
  /** The warms of the last WARM_AGAIN_AFTER_MS, oldest first: which segments, and the memory they count as taken. */
  private readonly recent: Array<{ id: number, at: number }> = []
  /** Segments warmed, all told. */
  warmed = 0

  constructor (
    private readonly segmentBytes: number,
    private readonly now: () => number = Date.now,
    private readonly freeBytes: () => number = freeMemory,
    private readonly reserveBytes: number = os.totalmem() * WARM_RESERVE_SHARE
  ) {}

  /**
   * A small read of segment `id` that the page cache did not serve; true when the segment
   * should be warmed now (the caller asks the kernel, and the warm is counted as done).
   */
  missed (id: number): boolean {
    const n = (this.misses.get(id) ?? 0) + 1
    if (n < WARM_AFTER_MISSES) {
      if (this.misses.size >= 4096 && n === 1) this.misses.clear() // reads all over a huge store: start over
      this.misses.set(id, n)
      return false
    }
    this.misses.delete(id)
    const t = this.now()
    while (this.recent.length > 0 && t - this.recent[0].at >= WARM_AGAIN_AFTER_MS) this.recent.shift()
    if (this.recent.some(w => w.id === id)) return false
    if (this.freeBytes() - (this.recent.length + 1) * this.segmentBytes < this.reserveBytes) return false
    this.recent.push({ id, at: t })
    this.warmed++
    return true
  }
}

/**
 * Memory no one uses, page cache included (Linux: MemFree of /proc/meminfo): what a warm may
 * fill without evicting anything. Elsewhere os.freemem().
 */
function freeMemory (): number {
  try {
    const m = /^MemFree:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'latin1'))
    if (m) return Number(m[1]) * 1024
  } catch {}
  return os.freemem()
}
