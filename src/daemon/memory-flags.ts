import v8 from 'node:v8'
import { LogdiskError } from '../errors'

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

/**
 * glibc malloc settings the daemon is started with (glibc reads them once, at process start,
 * so they go into the environment the daemon starts in; examples/logdisk@.service sets them
 * for `mount --foreground`). What they change, measured with the quick bench of logdisk alone
 * over the three phases (one run each, alternating, load ~2, session of 2026-12-03): peak RSS
 * 229.8, 237.7 and 229.8 MiB with them against 258.7, 244.4 and 243.1 without; throughput
 * within the noise of single runs.
 *
 * `MALLOC_ARENA_MAX=2`: glibc gives each thread that allocates its own arena (up to 8 per
 * core); the daemon has the libuv pool, two /dev/fuse reader threads and LevelDB's thread,
 * and memory freed in one arena is not reused by another.
 * `MALLOC_MMAP_THRESHOLD_=131072`: a fixed threshold. By default glibc raises it to the size of
 * every mmapped block freed (up to 32 MiB), so after the first 1 MiB request buffer or
 * typed array freed, such blocks come from the arenas and their pages stay resident; fixed,
 * they are mmapped and given back when freed.
 *
 * A variable already set in the environment wins. LOGDISK_DAEMON_MALLOC_ENV replaces the list
 * (space-separated NAME=VALUE; empty for none), for measuring one build with and without.
 */
export const DAEMON_MALLOC_ENV: readonly string[] = ['MALLOC_ARENA_MAX=2', 'MALLOC_MMAP_THRESHOLD_=131072']

/** The environment to start the daemon in: `env` with DAEMON_MALLOC_ENV's variables it does not set. */
export function daemonEnv (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env }
  for (const item of listOr(env.LOGDISK_DAEMON_MALLOC_ENV, DAEMON_MALLOC_ENV)) {
    const eq = item.indexOf('=')
    if (eq <= 0) throw new LogdiskError('BAD_ARGUMENT', `LOGDISK_DAEMON_MALLOC_ENV: "${item}" is not NAME=VALUE`)
    const name = item.slice(0, eq)
    if (out[name] === undefined) out[name] = item.slice(eq + 1)
  }
  return out
}

/** The Node flags to start the daemon with: DAEMON_NODE_FLAGS unless the environment says otherwise. */
export function daemonNodeFlags (env: NodeJS.ProcessEnv = process.env): string[] {
  return listOr(env.LOGDISK_DAEMON_NODE_FLAGS, DAEMON_NODE_FLAGS)
}

/** A space-separated list from the environment (empty: none), or `defaults` when it is unset. */
function listOr (value: string | undefined, defaults: readonly string[]): string[] {
  return value === undefined ? [...defaults] : value.split(/\s+/).filter(Boolean)
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
