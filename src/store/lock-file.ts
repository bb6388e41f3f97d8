import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import { LogdiskError } from '../errors'
import { isAlive } from '../process-alive'

/**
 * An exclusive lock file, taken by O_EXCL create: the one way logdisk keeps two processes (or
 * two callers in one process) out of a read-modify-write of a small file (a pool volume's
 * marker, a parent's clones.json). Before, volume-marker.ts and clone.ts each had their own,
 * and differed: the marker's removed a stale lock with a plain unlink after reading it, so two
 * waiters that both read the same dead holder could both go in (the second one's unlink removed
 * the lock the first had taken meanwhile); the clones' one moved it aside and put back one that
 * was not the stale one, which a third taker could slip between (helper-94).
 *
 * The file holds `<pid> <hostname> <nonce>\n` (older versions wrote `<pid> <hostname>`: read the
 * same). A holder is stale when its pid is gone from this host; one whose liveness cannot be
 * checked (another host's, or an empty or garbled file: its maker died before it wrote) when
 * the file is older than `unverifiableStaleMs` (never, when not given, for another host's;
 * EMPTY_STALE_MS for an empty or garbled one). A live holder on this host is never taken over.
 *
 * A stale lock is taken over under a claim file named for that very lock
 * (`<lock>.takeover-<nonce of the holder>`, created with O_EXCL): only the claim's maker
 * re-reads the lock and removes it if it still names the stale holder, then removes its claim.
 * A second taker that read the same stale holder gets the claim only after the lock is gone,
 * re-reads it, finds another holder (or none) and leaves it: at most one removes it, and never
 * a fresh holder's lock. A claim left by a taker that died is itself stale and taken over the
 * same way. Released in `finally`, only if the file still names this holder.
 */
export interface LockFileOptions {
  /** How long to wait for a live holder before LogdiskError BUSY. */
  waitMs: number
  /** Between two tries. */
  pollMs?: number
  /** A lock whose holder is on another host is stale when older than this (never when undefined). */
  unverifiableStaleMs?: number
  /** The one-line BUSY message; `who` is `process N on H` or `another process`. */
  busyMessage: (who: string) => string
  /** The message when the lock cannot be made at all (not EEXIST); the code is READ_ONLY or IO. */
  failMessage: (err: Error) => string
}

/** An empty or garbled lock (its maker died between its create and its write) is stale after this. */
export const EMPTY_STALE_MS = 10_000

/** For tests: called when a waiter has read a stale holder, before it takes the lock over. */
export const lockFileHooks: { beforeTakeover?: (lock: string, holder: string) => void | Promise<void> } = {}

/** Runs `fn` holding the lock file `lock`; waits (blocking the thread) while another holds it. */
export function withLockFileSync<T> (lock: string, fn: () => T, opts: LockFileOptions): T {
  const token = newToken()
  for (const step of takeSteps(lock, token, opts)) {
    if (step.stale !== undefined) void lockFileHooks.beforeTakeover?.(lock, step.stale)
    else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, opts.pollMs ?? 10)
  }
  try {
    return fn()
  } finally {
    releaseLock(lock, token)
  }
}

/** Runs `fn` holding the lock file `lock`; waits (without blocking) while another holds it. */
export async function withLockFile<T> (lock: string, fn: () => T | Promise<T>, opts: LockFileOptions): Promise<T> {
  const token = newToken()
  for (const step of takeSteps(lock, token, opts)) {
    if (step.stale !== undefined) await lockFileHooks.beforeTakeover?.(lock, step.stale)
    else await new Promise(resolve => setTimeout(resolve, opts.pollMs ?? 10))
  }
  try {
    return await fn()
  } finally {
    releaseLock(lock, token)
  }
}

/**
 * The taking of `lock`, shared by both forms, which differ only in how they wait: it yields
 * the stale holder it is about to take over (where the test hook runs) and a pause between
 * tries, and returns once the lock is ours; BUSY past opts.waitMs.
 */
function * takeSteps (lock: string, token: string, opts: LockFileOptions): Generator<{ stale?: string }, void, void> {
  const deadline = Date.now() + opts.waitMs
  while (true) {
    const r = tryTake(lock, token, opts)
    if (r === undefined) return
    if (r.gone) continue
    if (r.stale) {
      yield { stale: r.holder }
      if (takeOver(lock, r.holder, opts)) continue
    }
    if (Date.now() > deadline) throw busy(r.holder, opts)
    yield {}
  }
}

function newToken (): string {
  return `${process.pid} ${os.hostname()} ${crypto.randomBytes(6).toString('hex')}`
}

/** Creates `file` with O_EXCL holding `token`: undefined when made; else who holds it and whether it is stale. */
function tryTake (file: string, token: string, opts: LockFileOptions): { holder: string, stale: boolean, gone?: true } | undefined {
  try {
    const fd = fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o644)
    try { fs.writeSync(fd, `${token}\n`) } finally { fs.closeSync(fd) }
    return undefined
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EEXIST') throw new LogdiskError(code === 'EROFS' ? 'READ_ONLY' : 'IO', opts.failMessage(err as Error), err)
  }
  const holder = readHolder(file)
  if (holder === undefined) return { holder: '', stale: false, gone: true } // released meanwhile: try again at once
  return { holder, stale: isStale(file, holder, opts) }
}

function readHolder (file: string): string | undefined {
  try { return fs.readFileSync(file, 'utf8').trim() } catch { return undefined }
}

function parse (holder: string): { pid: number, host: string } | undefined {
  const m = /^(\d+) (\S+)( \S+)?$/.exec(holder)
  return m === null ? undefined : { pid: Number(m[1]), host: m[2] }
}

function isStale (file: string, holder: string, opts: LockFileOptions): boolean {
  const h = parse(holder)
  if (h !== undefined && h.host === os.hostname() && h.pid > 0) return !isAlive(h.pid)
  const after = h === undefined ? EMPTY_STALE_MS : opts.unverifiableStaleMs
  if (after === undefined) return false
  try { return Date.now() - fs.statSync(file).mtimeMs > after } catch { return false }
}

/**
 * Removes `lock` if it still names `holder` (read stale), under the claim file of that holder:
 * of two takers that read the same stale holder, at most one removes it, and neither a lock
 * taken since. False, without waiting, when another taker has the claim (it is removing the
 * lock now, or is stopped: the caller waits as for a live holder).
 */
function takeOver (lock: string, holder: string, opts: LockFileOptions): boolean {
  const claim = `${lock}.takeover-${claimName(holder)}`
  const token = newToken()
  // A claim is held for a read and an unlink: one of another host's is stale soon.
  const claimOpts = { ...opts, unverifiableStaleMs: EMPTY_STALE_MS }
  const r = tryTake(claim, token, claimOpts)
  if (r !== undefined) {
    // Another taker has it (and is removing the lock now), or died with it: its claim is stale then.
    if (r.gone === true) return true
    return r.stale && takeOver(claim, r.holder, claimOpts)
  }
  try {
    // Still the stale holder's (stale again: an empty file now may be a new one not yet written).
    const now = readHolder(lock)
    if (now === holder && isStale(lock, now, opts)) fs.rmSync(lock, { force: true })
  } finally {
    releaseLock(claim, token)
  }
  return true
}

/** A file-name part naming one holder's lock (a hash of what it holds: pid, host and nonce). */
function claimName (holder: string): string {
  return crypto.createHash('sha256').update(holder).digest('hex').slice(0, 16)
}

/** Removes `file` if it still holds `token` (one taken over as stale meanwhile is another's now). */
function releaseLock (file: string, token: string): void {
  let holder
  try {
    holder = fs.readFileSync(file, 'utf8').trim()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    holder = token // unreadable: removed as before, rather than left to block every later taker
  }
  if (holder === token) fs.rmSync(file, { force: true })
}

function busy (holder: string, opts: LockFileOptions): LogdiskError {
  const h = parse(holder)
  return new LogdiskError('BUSY', opts.busyMessage(h !== undefined ? `process ${h.pid} on ${h.host}` : 'another process'))
}
