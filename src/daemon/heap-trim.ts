import { trimHeap } from '../store/page-cache'

/** How often the daemon gives freed heap memory back (LOGDISK_HEAP_TRIM_MS; 0: never). */
const DEFAULT_EVERY_MS = 2000

/**
 * Gives the heap memory glibc keeps after frees back to the system every few seconds
 * (malloc_trim through native/page-cache.c). Why: each compaction after a run of writes has
 * LevelDB walk and rewrite many history records, and the memory it freed stayed resident, a
 * step higher after every compaction. Three cycles of sequential and random writes, each
 * with a compaction: resident afterwards 287 MiB without, 208 MiB with it (peaks 292 / 283:
 * the peak is inside one compaction, which this does not shorten). A trim with nothing to
 * give back costs microseconds.
 * Returns a stop function.
 */
export function startHeapTrim (env: NodeJS.ProcessEnv = process.env): () => void {
  const every = env.LOGDISK_HEAP_TRIM_MS === undefined ? DEFAULT_EVERY_MS : Number(env.LOGDISK_HEAP_TRIM_MS)
  if (!(every > 0)) return () => {}
  let running = false
  const timer = setInterval(() => {
    if (running) return
    running = true
    trimHeap().catch(() => false).finally(() => { running = false })
  }, every)
  timer.unref()
  return () => clearInterval(timer)
}
