import v8 from 'node:v8'
import vm from 'node:vm'
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

/** Growth of the heap and array buffers since the last collection that makes the next worth it (LOGDISK_PASS_GC_MIB; 0: never). */
const DEFAULT_PASS_GC_MIB = 16

/**
 * The daemon's Store `reclaimMemory`: a full garbage collection, then a trim, when the V8 heap
 * and array buffers grew by LOGDISK_PASS_GC_MIB (16) since the last one; else nothing. Why:
 * compaction's walks of the whole history and its index commits read and write tens of MiB of
 * LevelDB rows as Buffers that die at once, and V8 let them pile up for the whole pass (in
 * the bench, the peak of a run: heap 73 MiB and array buffers 56-62 at the end of one pass,
 * 57 and 32 after the next collection). A collection costs a pause of milliseconds on this
 * thread, a few per pass, none while no pass runs. Undefined when switched off.
 */
export function passMemoryReclaimer (env: NodeJS.ProcessEnv = process.env): (() => void) | undefined {
  const mib = env.LOGDISK_PASS_GC_MIB === undefined ? DEFAULT_PASS_GC_MIB : Number(env.LOGDISK_PASS_GC_MIB)
  if (!(mib > 0)) return undefined
  // Node's documented way to reach gc() without starting node with --expose-gc.
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const used = (): number => { const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers }
  let after = used()
  return () => {
    if (used() - after < mib * 1048576) return
    gc()
    after = used()
    trimHeap().catch(() => false)
  }
}
