import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../errors'
import { exactSize } from '../size-text'
import { AUTO_PREFIX, parseDuration, readPolicy, volumeIdPolicy } from '../policy/policy'
import type { Store } from '../store'
import { restoreImage } from '../copy/restore'
import type { Pool } from '../pool/pool'
import { poolOf } from '../app/open'
import { copyByCriteria, cutByCriteria, expandTarget, getCriteria } from '../copy/criteria'
import { exportSnapshot } from '../copy/export'
import { diffSnapshots } from '../copy/diff'
import { receiveStream } from '../copy/receive'
import { claimSpool } from '../copy/receive-spool'
import { sendStreamTo } from '../copy/send'
import { assertOutsideMount } from '../daemon/output-guard'
import { MARKER_FILE } from '../pool/volume-marker'
import { refuseOnClone } from '../clone/clone'

/**
 * The commands that act on a store, written once. The CLI runs them on the store directly
 * when it is not mounted; the mount daemon runs the same functions for requests on its
 * control socket. Arguments and results are plain JSON.
 */
export interface OpContext {
  /** Progress of long operations, shown by the CLI on a terminal (direct runs only). */
  onProgress?: (done: number, total: number) => void
  /**
   * The op should stop (its command was interrupted, or the client that asked the daemon for
   * it went away): an INTERRUPTIBLE op stops at its next progress step; the others go on.
   */
  cancelled?: () => boolean
  /** Set when the mount daemon runs the op: where it serves the store's images. */
  mountpoint?: string
  /**
   * resize: called under the store's append lock with the sizes just before the size
   * changes; throws to refuse (the mount daemon: a shrink while an image is open).
   */
  resizeReady?: (fromBytes: number, toBytes: number) => void
}

/** An output path the op is about to write: never one the running daemon itself serves. */
async function checkOutput (ctx: OpContext, out: string | undefined): Promise<void> {
  if (ctx.mountpoint && out) await assertOutsideMount(out, ctx.mountpoint)
}

type Args = Record<string, unknown>
export type Op = (store: Store, args: Args, ctx: OpContext) => Promise<unknown>

const str = (args: Args, key: string): string | undefined => typeof args[key] === 'string' ? args[key] as string : undefined
const envFaults = (): Set<string> => new Set((process.env.LOGDISK_FAULTS ?? '').split(',').filter(Boolean))

/**
 * The ops that stop halfway when their command is interrupted (Ctrl-C: the CLI sends the op
 * `cancel` with the job's id; or the client that asked the daemon went away), at their next
 * progress step, and what each leaves then: what an error at that point leaves, nothing of
 * their own (restore, export and send remove their `.partial` file, verify only reads) or a
 * state the next run goes on from (each segment a drain moved is moved whole). Not
 * compaction, archive, a baseline merge or receive: a pass stops only at its own safe points,
 * and a receive stopped while it applies a stream leaves part of it in the volume until a
 * receive --force. Those run to their end; the interrupted command says so.
 */
export const INTERRUPTIBLE: Record<string, (args: Args) => string> = {
  restore: args => nothingWritten(args.out),
  export: args => nothingWritten(args.out),
  send: args => args.out !== undefined && args.out !== '-' ? nothingWritten(args.out) : 'the stream ended unfinished',
  verify: () => 'the store was not checked to its end',
  // Not "what was moved stays moved": the pool's own shrink may drain the volume that took
  // them right back (helper-78).
  'pool remove': args => `${String(args.dir)} stays in the pool, with the segments not moved off it yet; pool remove again drains the rest`
}

/**
 * The long ops that run to their end when their command is interrupted: the command says so
 * and ends. Only these: a quick one (a snapshot's cut) is waited for, so that a `--freeze`
 * command's own handler thaws the filesystem (an exit here came first and left it frozen:
 * helper-78).
 */
export const RUN_TO_END = new Set(['compact', 'archive', 'receive', 'criteriaCopy', 'pool repair'])

/** What an interrupted copy to `out` left there: a file is not made; a block device keeps what was written. */
function nothingWritten (out: unknown): string {
  return isBlockDevicePath(out) ? `${String(out)} keeps what was written into it so far (a block device)` : `nothing was written to ${String(out)}`
}

function isBlockDevicePath (p: unknown): boolean {
  try {
    return typeof p === 'string' && fs.statSync(p).isBlockDevice()
  } catch {
    return false
  }
}

/** A long operation running now: which, since when, and its progress (in the op's own units). */
export interface RunningJob { op: string, startedMs: number, done: number, total: number }

/** Long operations running in this process, by job id (args.job, or one made up): `progress` and `status` show them. */
const jobs = new Map<string, RunningJob>()
/** How to stop each INTERRUPTIBLE job running here (the op `cancel`), by job id. */
const stoppers = new Map<string, () => void>()
/**
 * Jobs asked to stop before they began here (the `cancel` of a command interrupted at once
 * overtook its op, still checking its arguments), with when: each stops as it begins.
 */
const stopAskedEarly = new Map<string, number>()
const EARLY_CANCEL_KEPT_MS = 10 * 60_000

async function withJob<T> (op: string, args: Args, ctx: OpContext, fn: (onProgress: (done: number, total: number) => void, signal: AbortSignal) => Promise<T>): Promise<T> {
  const job = str(args, 'job') ?? `${op}-${process.hrtime.bigint()}`
  const left = op in INTERRUPTIBLE ? INTERRUPTIBLE[op] : undefined
  // LOGDISK_FAULTS=job-slow: each progress step takes 100 ms more (tests interrupt a job halfway).
  const slow = envFaults().has('job-slow')
  const running: RunningJob = { op, startedMs: Date.now(), done: 0, total: 0 }
  // Aborted when the job is asked to stop: what it waits for before its first step (the
  // store's maintenance lock, behind a compaction or a verify) gives up at once. It stopped
  // only once it had the lock and reached a step, perhaps minutes later.
  const stopping = new AbortController()
  const stop = (): void => { if (left && !stopping.signal.aborted) stopping.abort(new LogdiskError('INTERRUPTED', `${op} interrupted; ${left(args)}`)) }
  let watch: NodeJS.Timeout | undefined
  if (left) {
    stoppers.set(job, stop)
    if (stopAskedEarly.delete(job)) stop()
    // The client gone, or the command's own signal: seen while the job waits too, not only at its steps.
    if (ctx.cancelled) {
      watch = setInterval(() => { if (ctx.cancelled?.() === true) stop() }, 100)
      watch.unref()
    }
  }
  jobs.set(job, running)
  try {
    if (stopping.signal.aborted) throw stopping.signal.reason
    return await fn((done, total) => {
      if (slow) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100)
      // Thrown from the op's own progress step: it unwinds as an error there would. Not at
      // its last (done = total): a file may be in place by then (restore reports its end
      // after the rename), and what is left is only to answer.
      if (left && done < total && (stopping.signal.aborted || ctx.cancelled?.() === true)) throw new LogdiskError('INTERRUPTED', `${op} interrupted; ${left(args)}`)
      ctx.onProgress?.(done, total)
      running.done = done
      running.total = total
    }, stopping.signal)
  } finally {
    clearInterval(watch)
    jobs.delete(job)
    stoppers.delete(job)
  }
}

function requirePool (store: Store): Pool {
  const pool = poolOf(store)
  if (!pool) throw new LogdiskError('BAD_ARGUMENT', `${store.dir} was opened without its pool`)
  return pool
}

export const ops: Record<string, Op> = {
  // Replication and the clone guard are loaded by the ops that use them: the CLI starts faster.
  status: async store => ({ ...store.status(), jobs: [...jobs.values()], spaceBytes: await store.spaceByState(), pool: poolOf(store)?.status([], true), replication: await (await import('../replicate/manager')).replicationStatus(store, readPolicy(store.dir)) }),

  archive: (store, args, ctx) => {
    const p = readPolicy(store.dir)
    return withJob('archive', args, ctx, onProgress => store.archive({ olderThanMs: parseDuration(p['archive.after']), workingSet: p['segments.workingSet'] }, onProgress))
  },

  compact: (store, args, ctx) => withJob<unknown>('compact', args, ctx, onProgress => args.intoBaseline === true
    ? store.compactIntoBaseline(onProgress)
    : store.compact({ snapshot: str(args, 'snapshot'), cleanBelow: readPolicy(store.dir)['compact.cleanBelow'] }, onProgress)),

  'pool list': async store => requirePool(store).status([], true),
  'pool add': async (store, args, ctx) => {
    // Before any synchronous look at it: a volume on the daemon's own mount hung the daemon in
    // its own FUSE lookup, for good (helper-62). Async stats only, as for --out.
    if (ctx.mountpoint) await assertOutsideMount(path.join(String(args.dir), MARKER_FILE), ctx.mountpoint, { what: `${String(args.dir)} as a pool volume`, instead: 'give a directory' })
    return requirePool(store).add(String(args.dir), args.capacityBytes === undefined ? undefined : Number(args.capacityBytes), args.spare === true)
  },
  'pool remove': (store, args, ctx) => withJob('pool remove', args, ctx, async (onProgress, signal) => ({ moved: await requirePool(store).remove(String(args.dir), onProgress, signal) })),
  'pool repair': async store => {
    const pool = requirePool(store)
    const { made, staleLeft, healed, damaged, unplaced, forgotten } = await store.repairCopies(pool.copies(), (id, exclude) => pool.placeCopy(id, exclude))
    // What this open cut as a copy's writes (--drop-copy-writes), said by the command.
    const cut = store.recovery.cut
    const dropped = cut?.copyWrites === true ? { by: cut.by, segment: cut.segment, offset: cut.offset, bytes: cut.bytes, savedTo: cut.savedTo, segmentsSetAside: store.recovery.orphanedSegments } : null
    return { copies: made, staleLeft, healed, damaged, unplaced, dropped, forgotten }
  },
  verify: (store, args, ctx) => withJob('verify', args, ctx, (onProgress, signal) => store.verify({ copies: poolOf(store)?.copies(), onProgress, signal })),
  flush: store => store.flush(),
  resize: async (store, args, ctx) => {
    // A relative size is resolved under the store's lock (Store.resize): computed here, two
    // grows at once grew once (helper-86 D3). A resize whose client went away before it got
    // the lock (a Ctrl-C'd command, told nothing was changed) does not happen.
    const ready = (fromBytes: number, toBytes: number): void => {
      if (ctx.cancelled?.() === true) throw new LogdiskError('INTERRUPTED', `resize interrupted; ${store.dir} keeps its size (${exactSize(fromBytes)}); nothing was changed`)
      ctx.resizeReady?.(fromBytes, toBytes)
    }
    return { ...(await store.resize(Number(args.sizeBytes), { grow: args.grow === true, ready })), dir: store.dir }
  },

  snapshot: async (store, args) => {
    const name = str(args, 'name')
    if (name?.startsWith(AUTO_PREFIX)) {
      throw new LogdiskError('BAD_ARGUMENT', `snapshot names starting with "${AUTO_PREFIX}" belong to automatic snapshots (retention deletes them); pick another name`)
    }
    const policy = volumeIdPolicy(readPolicy(store.dir))
    return store.snapshot({ name: str(args, 'name'), id: args.id === undefined ? undefined : Number(args.id), frozen: args.frozen === true, idPolicy: policy })
  },

  snapshots: async store => {
    const pinned = await store.snapshotPinnedBytes()
    return store.snapshots().map(s => ({ ...s, time: new Date(s.timeMs).toISOString(), pinnedBytes: pinned.get(s.seq) ?? 0 }))
  },

  delete: async (store, args) => (await import('../clone/delete-guard')).deleteSnapshotRespectingClones(store, String(args.name), { forgetGoneClones: args.forgetGoneClones === true }),

  sync: async (store, args) => store.syncPoint(str(args, 'note') ?? '', args.frozen === true),

  log: async (store, args) => {
    let from = 1
    let to = Number.MAX_SAFE_INTEGER
    const name = str(args, 'snapshot')
    if (name !== undefined) {
      const snap = store.snapshotNamed(name)
      from = (store.snapshots().filter(s => s.seq < snap.seq).pop()?.seq ?? 0) + 1
      to = snap.seq
    }
    const out = []
    for await (const e of store.entries(from, to)) out.push(e)
    return out
  },

  restore: async (store, args, ctx) => {
    const out = str(args, 'out')
    if (!out || !path.isAbsolute(out)) throw new LogdiskError('BAD_ARGUMENT', 'restore needs --out FILE')
    refuseOnClone(store.dir, 'restore')
    await checkOutput(ctx, out)
    const point = await store.resolvePoint(String(args.at))
    const result = await withJob('restore', args, ctx, onProgress => restoreImage(store, point.seq, out, { force: args.force === true, onProgress }))
    return { ...point, out, ...result }
  },

  // F8: export, send/receive, diff, snapshot criteria (src/copy/).
  progress: async (_store, args) => {
    const job = jobs.get(String(args.job))
    return job ? { done: job.done, total: job.total } : null
  },
  /**
   * Asks a running job to stop at its next step, or at once while it still waits for the
   * store's maintenance lock; a job not begun yet stops as it begins (an INTERRUPTIBLE op; the
   * others ignore it).
   */
  cancel: async (_store, args) => {
    const job = String(args.job)
    const stop = stoppers.get(job)
    if (stop) stop()
    else if (!jobs.has(job)) {
      const now = Date.now()
      for (const [id, at] of stopAskedEarly) if (now - at > EARLY_CANCEL_KEPT_MS) stopAskedEarly.delete(id)
      stopAskedEarly.set(job, now)
    }
    return { asked: jobs.has(job) }
  },
  export: async (store, args, ctx) => {
    refuseOnClone(store.dir, 'export')
    await checkOutput(ctx, str(args, 'out'))
    return withJob('export', args, ctx, onProgress => exportSnapshot(store, String(args.name), String(args.out), { force: args.force === true, faults: envFaults(), onProgress }))
  },
  send: async (store, args, ctx) => {
    refuseOnClone(store.dir, 'send')
    await checkOutput(ctx, str(args, 'out'))
    return withJob('send', args, ctx, onProgress => sendStreamTo(store, String(args.name), str(args, 'from'), { out: str(args, 'out'), socket: str(args, 'socket'), force: args.force === true }, { onProgress }))
  },
  receive: (store, args, ctx) => withJob('receive', args, ctx, async onProgress => {
    // A stream the command spooled (from a pipe) is this process's once it applies it: the
    // command may end first (Ctrl-C: the daemon runs a receive to its end), and the spool
    // must neither stay for good nor look dead to a later receive while it is read here.
    const spool = args.spool === true ? claimSpool(String(args.file), store.dir) : undefined
    try {
      return await receiveStream(store, spool ?? String(args.file), { force: args.force === true, idPolicy: volumeIdPolicy(readPolicy(store.dir)), onProgress })
    } finally {
      if (spool !== undefined) fs.rmSync(spool, { force: true })
    }
  }),
  diff: async (store, args) => { refuseOnClone(store.dir, 'diff'); return await diffSnapshots(store, String(args.a), String(args.b)) },
  criteriaSnapshot: (store, args) =>
    cutByCriteria(store, String(args.criteria), { name: str(args, 'name'), id: args.id === undefined ? undefined : Number(args.id), frozen: args.frozen === true, idPolicy: volumeIdPolicy(readPolicy(store.dir)) }),
  criteriaCopy: async (store, args, ctx) => {
    refuseOnClone(store.dir, 'a criteria copy')
    if (ctx.mountpoint) await checkOutput(ctx, expandTarget(getCriteria(store.dir, String(args.criteria)), store.snapshotNamed(String(args.snapshot))))
    return withJob('criteria copy', args, ctx, onProgress => copyByCriteria(store, String(args.criteria), String(args.snapshot), { onProgress, faults: envFaults() }))
  }
}
