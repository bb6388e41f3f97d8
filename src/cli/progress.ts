import crypto from 'node:crypto'
import path from 'node:path'
import { request } from '../daemon/control'
import { readDaemonInfo } from '../daemon/paths'
import { readConfig } from '../store/config'
import { runOp } from './on-store'
import { jsonMode } from './output'
import { formatBytes } from './units'

export interface Progress { update: (done: number, total: number) => void, stop: () => void }

/**
 * What a long operation counts its progress in: bytes, or segments or blocks of the store
 * (shown as bytes too, times the store's segment or block size, when it is known).
 */
export type ProgressUnit = 'bytes' | 'segments' | 'blocks'

/** Whether a bar is drawn: stderr is a terminal and the output is not --json. */
export function showsProgress (): boolean {
  return process.stderr.isTTY === true && !jsonMode()
}

/**
 * A progress bar on stderr (cli-progress) with what is done of the total, the rate and the
 * ETA: `restoring [████░░░░] 42% | 1.6 GiB/3.9 GiB | 45.2 MiB/s | ETA 52s`. Nothing at all
 * when stderr is not a terminal or under --json: piped, a command prints only its result.
 */
export function progressBar (label: string, unit: ProgressUnit = 'bytes', unitBytes = 1): Progress {
  if (!showsProgress()) return { update () {}, stop () {} }
  const bytes = unit === 'bytes' || unitBytes > 1
  // Loaded only when a bar is drawn: piped runs (scripts, benchmarks) start faster without it.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const cliProgress = require('cli-progress') as typeof import('cli-progress')
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {percentage}% | {shown} | {rate} | ETA {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
    etaBuffer: 20,
    fps: 5
  }, cliProgress.Presets.shades_classic)
  let started = 0
  let first = 0
  const payload = (done: number, total: number): { shown: string, rate: string } => {
    const secs = (Date.now() - started) / 1000
    const perSec = secs > 0.2 ? (done - first) / secs : 0
    return bytes
      ? { shown: `${formatBytes(done * unitBytes)}/${formatBytes(total * unitBytes)}`, rate: `${formatBytes(perSec * unitBytes)}/s` }
      : { shown: `${done}/${total} ${unit}`, rate: `${perSec.toFixed(1)} ${unit}/s` }
  }
  return {
    update (done, total) {
      if (started === 0) {
        started = Date.now()
        first = done
        bar.start(total, done, payload(done, total))
      } else {
        bar.setTotal(total)
        bar.update(done, payload(done, total))
      }
    },
    stop () { if (started !== 0) bar.stop() }
  }
}

/** The store's segment or block size, to show counts as bytes (undefined if unreadable). */
export function unitBytesOf (storeArg: string, unit: ProgressUnit): number {
  if (unit === 'bytes') return 1
  try {
    const config = readConfig(path.resolve(storeArg))
    return unit === 'segments' ? config.segmentBytes : config.blockBytes
  } catch {
    return 1
  }
}

/**
 * runOp with a progress bar on a terminal. Run directly, the op reports progress itself; run
 * by the mount daemon, this polls the daemon's `progress` op for the job id it passes along
 * (src/ops/ops.ts withJob). Piped: runOp alone.
 */
export async function runTracked<T> (storeArg: string, op: string, args: Record<string, unknown>, label: string, unit: ProgressUnit = 'bytes'): Promise<T> {
  if (!showsProgress()) return runOp<T>(storeArg, op, args)
  const bar = progressBar(label, unit, unitBytesOf(storeArg, unit))
  const job = crypto.randomUUID()
  let running = true
  const poll = (async () => {
    while (running) {
      await new Promise(resolve => setTimeout(resolve, 300))
      const daemon = readDaemonInfo(path.resolve(storeArg))
      if (!running || !daemon) continue
      try {
        const p = await request<{ done: number, total: number } | null>(daemon.socket, 'progress', { job }, 2000)
        if (p && running) bar.update(p.done, p.total)
      } catch { /* not mounted, or the job ended */ }
    }
  })()
  try {
    return await runOp<T>(storeArg, op, { ...args, job }, { onProgress: bar.update })
  } finally {
    running = false
    await poll
    bar.stop()
  }
}
