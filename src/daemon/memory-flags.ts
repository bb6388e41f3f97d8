import v8 from 'node:v8'

/**
 * Node/V8 flags the mount daemon runs with (issue 11: daemon peak RSS under 256 MiB over the
 * quick bench). Measured by sampling the daemon's /proc/self/status, smaps and V8 heap spaces
 * every 100 ms through the bench (README, Memory): the file-backed part was flat (45-52 MiB,
 * 41 of it the node binary; LevelDB's mapped tables under 5 MiB), the peak was anonymous
 * memory, and most of what moved was the V8 heap: up to 122 MiB of it at the peak, of which
 * ~80 MiB was garbage that the next full GC freed (heapUsed 95 -> 14 MiB).
 *
 * `--heap-growing-percent=100`: after each full GC V8 lets the old generation grow to up to
 * 4x its live size before the next one (its dynamic factor for a heap whose limit is GiBs).
 * The daemon's live heap is 15-40 MiB, and what it promotes (index batches, FUSE requests in
 * flight, checkpoint records: dead within a second or two) piled up to 40-85 MiB of old space
 * in the random-write jobs and the compaction after them. A fixed 2x: peak 223 / 228 MiB in
 * two quick benches at load 5-6 against 284 / 290 without, alternating. 1.5x (`=50`) kept old
 * space at 21-27 MiB (peak 204-216 MiB at load 7-15 against 249-267) but runs a full GC twice
 * as often, and the random-write medians of its six pairs were lower (QD1 2572 against 3087
 * IOPS, QD16 9594 against 10354; within the spread of that loaded machine, and its run came
 * first in four of the six pairs while the load fell, but not ruled out).
 *
 * Measured and not set: a smaller young generation. V8 grows the two semi-spaces to 16 MiB
 * each under the write jobs (32 MiB resident from the first sequential write on);
 * `--max-semi-space-size=8` or `=4` keeps 16 or 8 MiB, but the random-write jobs then cost
 * 28-37 CPU-s/GiB instead of 21-25 (more scavenges and more promotion), and IOPS fell with it.
 *
 * LOGDISK_DAEMON_NODE_FLAGS replaces the list (space-separated; empty for none), for
 * measuring one build with and without them.
 */
export const HEAP_GROWING_PERCENT = 100
export const DAEMON_NODE_FLAGS: readonly string[] = [`--heap-growing-percent=${HEAP_GROWING_PERCENT}`]

/** The Node flags to start the daemon with: DAEMON_NODE_FLAGS unless the environment says otherwise. */
export function daemonNodeFlags (env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.LOGDISK_DAEMON_NODE_FLAGS
  return v === undefined ? [...DAEMON_NODE_FLAGS] : v.split(/\s+/).filter(Boolean)
}

/**
 * For a daemon started as `mount --foreground` (systemd) by a plain `node`: V8 reads the heap
 * growing factor at every full GC, so setting it at run time takes effect (it is not one of
 * the flags NODE_OPTIONS accepts). Returns the flags set.
 */
export function applyRuntimeHeapFlags (execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env): string[] {
  const wanted = daemonNodeFlags(env).filter(f => f.startsWith('--heap-growing-percent='))
  const missing = wanted.filter(f => !execArgv.some(a => a.startsWith('--heap-growing-percent')))
  for (const f of missing) v8.setFlagsFromString(f)
  return missing
}
