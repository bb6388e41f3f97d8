import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError, isLogdiskError } from '../errors'
import { request } from '../daemon/control'
import { DAEMON_LOG, isAlive, logdiskMountAt, readDaemonInfo, type DaemonInfo } from '../daemon/paths'
import { INTERRUPTIBLE, RUN_TO_END, ops, type OpContext } from '../ops/ops'
import type { OpenOptions, Store } from '../store'
import { openStore, type Access } from '../app/open'
import { readPolicy } from '../policy/policy'
import { readConfig } from '../store/config'
import { exactSize, formatBytes } from '../size-text'
import { ReplicationManager } from '../replicate/manager'
import { prepareStore } from './store-access'
import { warn } from './output'
import { lockWaitMs, sleep, waitedError } from './lock-wait'
import { duringSignals } from './interrupt'

/** Direct runs print only the command's own output; warnings go to stderr, one line each. */
export const quietLogger = {
  info () {},
  warn (_fields: object, msg: string) { warn(msg) },
  error (_fields: object, msg: string) { process.stderr.write(`logdisk: error: ${msg}\n`) }
}

/**
 * Operations that only read the store (their output, if any, goes elsewhere): they open it
 * read-only, so they work on a store the user may only read, on a full disk, and on a copy.
 */
export const READ_ONLY_OPS = new Set(['status', 'snapshots', 'log', 'diff', 'verify', 'pool list', 'restore', 'export', 'send', 'progress'])

export function accessOf (op: string): Access {
  return READ_ONLY_OPS.has(op) ? 'read' : 'write'
}

/**
 * Runs an operation (src/ops) on a store: directly, under the store's lock, when it is not
 * mounted; through the mount daemon's control socket when it is (the daemon holds the lock).
 * Either way the command sees the same store. The store is checked first (store-access.ts):
 * every way it can be unusable is one line, before anything is touched.
 */
export async function runOp<T> (storeArg: string, op: string, args: Record<string, unknown> = {}, ctx: OpContext = {}, open: Pick<OpenOptions, 'dropCopyWrites'> = {}): Promise<T> {
  const access = accessOf(op)
  const { dir } = prepareStore(storeArg, access)
  // A job id names the run to the daemon's `cancel` (and `progress`).
  const interruptible = op in INTERRUPTIBLE
  if (interruptible && typeof args.job !== 'string') args = { ...args, job: crypto.randomUUID() }
  const deadline = Date.now() + lockWaitMs()
  let store: Store
  while (true) {
    try {
      store = (await openStore(dir, { ...open, holder: `logdisk ${op}`, logger: quietLogger }, [], access)).store
      break
    } catch (err) {
      if (!(err instanceof LogdiskError) || err.code !== 'STORE_LOCKED') throw err
      const daemon = readDaemonInfo(dir)
      if (daemon) {
        // What a resize whose daemon dies is told compares the size with this one.
        const sizeBefore = op === 'resize' ? sizeOnDisk(dir) : undefined
        try {
          const asked = (): Promise<T> => request<T>(daemon.socket, op, args)
          if (!interruptible && !RUN_TO_END.has(op)) return await asked()
          return await duringSignals(asked, async signal => {
            if (!interruptible) return `${op} interrupted (${signal}); the mount daemon (pid ${daemon.pid}) runs it to its end: it does not stop halfway (see ${path.join(dir, DAEMON_LOG)})`
            await request(daemon.socket, 'cancel', { job: args.job }, 5000)
            return undefined // the request's answer is the op's INTERRUPTED error
          }, interruptedError(op, args))
        } catch (inner) {
          if (isLogdiskError(inner, 'NOT_MOUNTED')) {
            const code = ((inner.cause as NodeJS.ErrnoException | undefined)?.code)
            if (code === 'EACCES') throw new LogdiskError('READ_ONLY', `${dir} is mounted (pid ${daemon.pid}) and its control socket ${daemon.socket} is not open to this user: run the command as the user who mounted it`, inner)
            // No daemon answers (yet: a mount starting; or no more: a stale daemon.json): wait as for a command.
          } else if (isLogdiskError(inner, 'DAEMON_DIED')) {
            throw await daemonDied(dir, daemon, op, op === 'resize' ? { ...args, sizeBefore } : args)
          } else throw inner
        }
      }
      // Another command holds the unmounted store: wait for it (--wait), then name it.
      if (Date.now() >= deadline) throw waitedError(err)
      await sleep(Math.min(200, Math.max(0, deadline - Date.now())))
    }
  }
  // A store that replicates takes the replica's lease for a write as a mount does
  // (REPLICATION.md "One writer"): refused (LEASE_HELD, FENCED) while another store holds it,
  // and what it wrote is shipped before the lease is released. Offline snapshots and syncs
  // succeeded while another store held the lease, and the store diverged from its replica
  // without a word until its next mount (a hostile test, helper-50).
  let replication: ReplicationManager | undefined
  let done = false
  let target = ''
  try {
    const policy = access === 'write' ? readPolicy(dir) : undefined
    target = policy?.['replicate.target'] ?? ''
    if (policy !== undefined && target !== '') {
      // Its running messages ("retrying every interval") are a daemon's; the command says
      // once, at the end, what did not reach the replica.
      replication = new ReplicationManager(store)
      await replication.apply(policy, true)
    }
    // Run here, an op that stops halfway is asked to; any other ends with the process, as a
    // kill would (every pass is safe to kill).
    let stop = false
    const run = (): Promise<T> => ops[op](store, args, { ...ctx, cancelled: () => stop }) as Promise<T>
    const result = interruptible ? await duringSignals(run, async () => { stop = true; return undefined }, interruptedError(op, args)) : await run()
    if (replication !== undefined) await store.flush() // the last ship, at the stop below, covers it
    done = true
    return result
  } finally {
    // As an unmount: the work is done; a target that cannot take the last ship is only said.
    const left = await replication?.stop().catch(err => ({ lagBytes: 1, lastError: (err as Error).message }))
    // A command that failed says so in its one line; one that worked says what is not shipped.
    if (done && left !== undefined && left.lagBytes > 0) warn(`replication: what this command wrote is not on the replica ${target} yet${left.lastError ? ` (${left.lastError})` : ''}; it is shipped at the next mount or write`)
    await store.close()
  }
}

/** The INTERRUPTED error of an op that stops halfway (ops.ts INTERRUPTIBLE), for duringSignals. */
function interruptedError (op: string, args: Record<string, unknown>): (() => LogdiskError) | undefined {
  const left = INTERRUPTIBLE[op]
  return left === undefined ? undefined : () => new LogdiskError('INTERRUPTED', `${op} interrupted; ${left(args)}`)
}

function sizeOnDisk (dir: string): number | undefined {
  try { return readConfig(dir).sizeBytes } catch { return undefined }
}

/**
 * What a resize whose daemon died left: the size store.json holds now, against the one asked
 * for (`args.sizeBefore`: store.json's when the command sent the request).
 */
export function resizeOutcome (dir: string, args: Record<string, unknown>): string {
  const now = sizeOnDisk(dir)
  if (now === undefined) return `it may or may not have finished: check the size with logdisk status ${dir} before resizing again`
  const asked = Number(args.sizeBytes)
  const before = typeof args.sizeBefore === 'number' ? args.sizeBefore : undefined
  if (args.grow === true) {
    if (before !== undefined && now === before + asked) return `it finished: ${dir} is ${exactSize(now)} now (store.json; it was ${exactSize(before)})`
    if (before !== undefined && now === before) return `it did not finish: ${dir} is still ${exactSize(now)} (store.json)`
    return `it may or may not have finished: ${dir} is ${exactSize(now)} now (store.json); check that before growing again (a retried --size +${formatBytes(asked)} grows it again if it did)`
  }
  return now === asked ? `it finished: ${dir} is ${exactSize(now)} now (store.json)` : `it did not finish: ${dir} is ${exactSize(now)} now (store.json)`
}

/**
 * The daemon went away while it worked for this command: say so, and remove what it half
 * wrote (the `<out>.partial` of restore, export and send), so no half image is left behind.
 */
async function daemonDied (dir: string, daemon: DaemonInfo, op: string, args: Record<string, unknown>): Promise<LogdiskError> {
  await new Promise(resolve => setTimeout(resolve, 200)) // a killed process may linger a moment
  const dead = !isAlive(daemon.pid)
  const notes: string[] = []
  const out = typeof args.out === 'string' ? args.out : undefined
  if (out) {
    const partial = `${out}.partial`
    try {
      if (fs.lstatSync(partial).isFile()) {
        fs.rmSync(partial, { force: true })
        notes.push(`removed the half-written ${partial}`)
      }
    } catch { /* none was made */ }
    try {
      if (fs.statSync(out).isBlockDevice()) notes.push(`${out} was partly overwritten`)
    } catch { /* not there */ }
  }
  const what = dead ? `the mount daemon (pid ${daemon.pid}) died during ${op}` : `the mount daemon (pid ${daemon.pid}) dropped the connection during ${op}`
  // devfuse's watchdog detaches the mount by itself, a moment after the daemon died (then
  // unmount finds nothing there); fuse-native leaves it for unmount to remove.
  const next = !dead ? '' : logdiskMountAt(daemon.mountpoint)
    ? `; logdisk mount ${dir} ${daemon.mountpoint} mounts the store again (logdisk unmount ${daemon.mountpoint} first, if its stale mount is still there)`
    : `; its mount is gone; logdisk mount ${dir} ${daemon.mountpoint} mounts the store again`
  if (op === 'resize') {
    // store.json is written whole (renamed into place) just before the answer: a daemon killed
    // around it may have resized, and a retried `--size +N` then grew twice (helper-86 D5).
    return new LogdiskError('DAEMON_DIED', `${what}; ${resizeOutcome(dir, args)}; see ${path.join(dir, DAEMON_LOG)}${next}`)
  }
  return new LogdiskError('DAEMON_DIED', `${what}; it did not finish${notes.length > 0 ? ` (${notes.join('; ')})` : ''}; see ${path.join(dir, DAEMON_LOG)}${next}`)
}
