import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { LogdiskError, isLogdiskError, type ErrorCode } from '../errors'
import { Store } from '../store/store'
import { segmentFileName } from '../store/format'
import { UNFLUSHED } from '../store/recovery'
import { holdsOnlyFreeEntries } from '../store/scanner'
import type { FileHandle } from '../store/file-layer'
import type { CompactionReport } from '../store/compaction'
import type { Logger } from '../store/logger'
import { Rng } from './rng'
import { SimArchive } from './sim-archive'
import { SimFileLayer } from './sim-file-layer'
import { SimHome } from './sim-home'
import { SimIndexStorage } from './sim-index'
import { checkExpectation, ImageModel, type Expectation, type WriteRecord } from './sim-model'
import { SimScheduler, type FaultRule } from './sim-scheduler'

/**
 * The deterministic simulation of a store (after TigerBeetle's VOPR): one seed drives a
 * scheduler that runs, concurrently, writers and readers of the current image and of
 * snapshots, snapshots, deletes, sync points, checkpoints, compaction in every mode, baseline
 * merges, archiving and fetch-back, pool growth and drain, mirror repair, clean reopens,
 * index rebuilds and power losses, while the simulated disk, index and archive reorder and
 * delay every I/O completion and fail operations by label (EIO, ENOSPC).
 *
 * The oracle: after every phase the current image, every snapshot image and every sync point
 * (a restore) equal the plain model (src/testing/sim-model.ts), or the operation was refused
 * with an error the design allows (IO or NO_SPACE where a fault was injected, BUSY, a restore
 * outside the history window). Wrong bytes are never acceptable; neither is CORRUPT.
 */
export interface SimulationOptions {
  phases?: number
  /** Called with each line of the trace (the last lines are in a failure's message anyway). */
  trace?: (line: string) => void
  /** Debugging: the store's log lines go to `trace` too (SIM_LOG=1 in scripts/simulate.mjs). */
  storeLog?: boolean
  /** Debugging: called with the live objects before a verify failure is reported. */
  inspect?: (ctx: { store: Store, sim: SimFileLayer, home: SimHome, scheduler: SimScheduler }) => Promise<void>
  /** The replication gate (below): on, off, or (undefined) by the seed, in half the runs. */
  replicationGate?: boolean
  /** Segment handles kept open (the store's default is 64); drawn from the seed when absent. */
  maxOpenSegments?: number
  /**
   * Bringing archived segments back into the pool (Placement.bringBack: the background fetch
   * of a store recovered from a replica) beside the other activities: on, off, or
   * (undefined) by the seed's own rng, in half the runs that have an archive.
   */
  bringBack?: boolean
  /**
   * Saving the block map at clean closes and loading it at opens (block-map-file.ts): its
   * extra file operations change the interleavings, so seeds found before it pass false.
   */
  savedMap?: boolean
  /**
   * Segment size in blocks (default 258: one full entry after the header page). Larger
   * segments let a group commit run several writevs at once (log-appender.ts
   * WRITEVS_IN_FLIGHT: each at most 1 MiB), which a 258-block segment never holds.
   */
  segmentBlocks?: number
  /** The store's writevMaxBytes (small: the writevs of a group commit run at once). */
  writevMaxBytes?: number
  /**
   * The store's compactionDeadBatch: small, a compaction that finds more dead versions walks
   * the history a second time and commits their removal a few at a time, with every other
   * activity and power loss landing between the batches.
   */
  compactionDeadBatch?: number
  /** The store's historyHoldVersions: small, the walks of the history read crowded chunks again by groups of blocks. */
  historyHoldVersions?: number
  /** Power losses keep any mix of unsynced pages (SimFileLayer.crash `pages`), not a prefix. */
  crashPages?: boolean
  /**
   * After half the power losses the index is lost too (deleted before the reopen): a full
   * rebuild from a log the crash tore. Off by default (it changes what a seed does).
   */
  rebuildAfterPowerLoss?: boolean
  /**
   * A drain first removes the segment made ahead of its roll, whatever its volume, as the
   * pool's drain does (Pool.drain: Store.discardNextSegment). Off by default.
   */
  drainDiscardsNext?: boolean
  /** Reads of segment and store files stop short of what they asked for (SimFileLayer.shortReads). Off by default. */
  shortReads?: boolean
  /**
   * Grows and shrinks of the volume (Store.resize) among the other activities, drawn from
   * their own rng (a seed without them replays as before they existed). Off by default. The
   * model follows: a shrink is refused while a block past the new end holds data (never when
   * no block there was ever written), a write past the end after it is refused
   * (OUT_OF_RANGE), a grow reads zeros, a snapshot keeps the size at its cut (sizeAt for a
   * sync point), and after a power loss the size is the last one store.json took.
   */
  resize?: boolean
}

export interface SimulationReport {
  seed: number
  phases: number
  steps: number
  ops: Record<string, number>
  crashes: number
  reopens: number
  /** Reopens after a failed write-back (no power loss). */
  remounts: number
  rebuilds: number
  /** Opens that loaded the block map saved at the previous clean close (block-map-file.ts). */
  savedMapLoads: number
  /** Opens whose recovery cut a torn write because no later entry recorded it as flushed (durableSeq). */
  unflushedCuts: number
  /** The most writes in flight at once on one file (group commit: several writevs of a group). */
  maxWritesInFlight: number
  /** Synchronous writevs and reads (IoOptions.inline, readCached) the simulated disk served. */
  syncOps: { writes: number, reads: number }
  faultsInjected: number
  config: string
}

export class SimulationFailure extends Error {
  constructor (readonly seed: number, message: string, readonly trace: string[]) {
    super(`seed ${seed}: ${message}\n  last steps:\n    ${trace.slice(-25).join('\n    ')}`)
  }
}

const B = 4096
/** The smallest segment size (one full 256-block entry after the header page), rounded to pages. */
const DEFAULT_SEGMENT_BLOCKS = 258

interface Point {
  kind: 'snapshot' | 'sync'
  name: string
  /** Place in the model's order, while the phase that made it runs. */
  mark: number
  /** With resizes: the append-lock sections queued before it (its place relative to a resize). */
  ticket: number
  /** The volume's size at its cut (from the model's resizes), set with `expect`. */
  sizeBytes?: number
  expect?: Expectation
  /** Its call resolved: it must exist (until deleted). */
  resolved: boolean
  timeMs: number
  deleting?: boolean
}

export async function simulate (seed: number, opts: SimulationOptions = {}): Promise<SimulationReport> {
  const rng = new Rng(seed)
  const sched = new SimScheduler(new Rng(seed ^ 0x5eed5eed))
  const crashRng = new Rng(seed ^ 0x0c0ffee0)
  // Replication (src/replicate) keeps passes off segments not on the replica yet (retainFrom):
  // in half the runs a gate moves up now and then, as shipping would, and every sealed durable
  // segment at or above it must stay byte for byte as it was sealed. Its own rng, so the
  // other draws of a seed stay what they were.
  const gateRng = new Rng(seed ^ 0x7e91ca7e)
  const replicating = opts.replicationGate ?? gateRng.chance(0.5)
  // Few open segment handles, so that the handle cache evicts under reads in flight. Its own
  // rng too.
  const maxOpenSegments = opts.maxOpenSegments ?? new Rng(seed ^ 0x0be75e95).range(1, 4)
  // Bringing archived segments back (the background fetch after a lazy recovery): its own rng,
  // so a seed whose draw leaves it off replays exactly as before it existed.
  const bringBackRng = new Rng(seed ^ 0x6b1c6bac)
  const bringBackDraw = bringBackRng.chance(0.5)
  // Resizes (opts.resize): their own rng, drawn from only when on.
  const resizing = opts.resize === true
  const resizeRng = new Rng(seed ^ 0x2e512e00)
  let gate = 0
  const sealedBytes = new Map<number, Buffer>()
  const sim = new SimFileLayer(sched)
  if (opts.shortReads === true) sim.shortReads = new Rng(seed ^ 0x54047e4d)
  const indexes = new SimIndexStorage(sched)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-sim-'))
  const trace: string[] = []
  const log = (line: string): void => {
    trace.push(`[${sched.steps}] ${line}`)
    if (trace.length > 400) trace.splice(0, 100)
    opts.trace?.(line)
  }
  const fail = (message: string): never => { throw new SimulationFailure(seed, message, trace) }

  const SEGMENT_BYTES = (opts.segmentBlocks ?? DEFAULT_SEGMENT_BLOCKS) * B
  const sizeBytes = rng.range(96, 640) * B
  /** With resizes, the volume grows up to twice its first size and shrinks down to 48 blocks. */
  const capacityBytes = resizing ? 2 * sizeBytes : sizeBytes
  const MIN_RESIZE_BLOCKS = 48
  const copies = rng.chance(0.3) ? 2 : 1
  const home = new SimHome(path.join(dir, 'pool'), rng, copies, rng.range(4, 24), copies + rng.int(2))
  const archive = rng.chance(0.5) ? new SimArchive(sched) : undefined
  const checkpointMaxBlocks = rng.range(8, 400)
  // Small LevelDB writes per checkpoint, so power fails between a checkpoint's chunks too
  // (derived, not drawn: every seed keeps the rest of its run).
  const indexCommitChunkOps = 4 + checkpointMaxBlocks % 61
  const historyKeepMs = [0, 0, 0, rng.range(5, 500), rng.range(500, 5000), Infinity, 24 * 3600_000][rng.int(7)]
  const phases = opts.phases ?? 24
  const bringingBack = archive !== undefined && (opts.bringBack ?? bringBackDraw)
  const config = `size ${sizeBytes / B} blocks, ${opts.segmentBlocks !== undefined ? `segments of ${opts.segmentBlocks} blocks, ` : ''}${opts.writevMaxBytes !== undefined ? `writevs of ${opts.writevMaxBytes} bytes, ` : ''}${opts.compactionDeadBatch !== undefined ? `dead versions in batches of ${opts.compactionDeadBatch}, ` : ''}${opts.historyHoldVersions !== undefined ? `chunks of over ${opts.historyHoldVersions} versions read by groups, ` : ''}${opts.crashPages === true ? 'power loss keeps any unsynced pages, ' : ''}${copies} cop${copies > 1 ? 'ies' : 'y'}, ${home.volumes().length} volumes, archive ${archive ? 'on' : 'off'}${bringingBack ? ' with bring-back' : ''}, replication gate ${replicating ? 'on' : 'off'}, history.keep ${historyKeepMs} ms, checkpoint every ${checkpointMaxBlocks} blocks in index writes of ${indexCommitChunkOps}, ${maxOpenSegments} open segment handles${resizing ? ', resizes' : ''}`
  log(`config: ${config}`)

  const report: SimulationReport = { seed, phases, steps: 0, ops: {}, crashes: 0, reopens: 0, remounts: 0, rebuilds: 0, savedMapLoads: 0, unflushedCuts: 0, maxWritesInFlight: 0, faultsInjected: 0, syncOps: { writes: 0, reads: 0 }, config }
  const count = (op: string): void => { report.ops[op] = (report.ops[op] ?? 0) + 1 }

  /** Runs `p` to completion under the scheduler (no crash). */
  const drive = async <T>(p: Promise<T>): Promise<T> => {
    await sched.run(p)
    return p
  }
  const model = new ImageModel(sizeBytes, B, capacityBytes)
  // Resizes: where each append-lock section was queued, in the model's order. A resize takes
  // its place in the append order only once it holds the maintenance lock (and a shrink has
  // checkpointed), not when it is called: its `ready` reads the section it runs in.
  let lockTickets = 0
  let section: { mark: number, ticket: number } | undefined
  const watchLock = (store: Store): void => {
    type Run = <T>(fn: () => Promise<T>, signal?: AbortSignal) => Promise<T>
    const lock = (store as unknown as { p: { log: { lock: { run: Run } } } }).p.log.lock
    const run = lock.run.bind(lock) as Run
    lock.run = <T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> => {
      const at = { mark: model.mark(), ticket: ++lockTickets }
      return run(() => { section = at; return fn() }, signal)
    }
  }
  const open = async (): Promise<Store> => {
    const store = await openStore()
    if (resizing) watchLock(store)
    if (store.recovery.blockMap.from === 'saved') report.savedMapLoads++
    if (store.recovery.cut?.reason.endsWith(UNFLUSHED) === true) report.unflushedCuts++
    return store
  }
  const openStore = (): Promise<Store> => Store.open(dir, {
    fileLayer: sim,
    ...(opts.storeLog === true && opts.trace ? { logger: traceLogger(opts.trace) } : {}),
    home,
    archive,
    clock: sched.clock,
    openIndex: indexes.open,
    checkpointIntervalMs: 0,
    checkpointMaxBlocks,
    indexCommitChunkOps,
    historyKeepMs,
    retainFrom: replicating ? () => gate : undefined,
    maxOpenSegments,
    savedBlockMap: opts.savedMap ?? true,
    writevMaxBytes: opts.writevMaxBytes,
    compactionDeadBatch: opts.compactionDeadBatch,
    historyHoldVersions: opts.historyHoldVersions
  })
  // A restore may be refused only without backing storage, and only for a point that has
  // been outside the history window (snapshots never).
  const mayRefuse = (p: Point): boolean => !archive && p.timeMs < sched.nowMs - historyKeepMs

  try {
    await drive(Store.create(dir, { sizeBytes, blockBytes: B, segmentBytes: SEGMENT_BYTES }, sim))
    let store = await drive(open())
    const points = new Map<string, Point>()
    let nextName = 1
    /** Resizes: the volume's size at the start of the phase (acknowledged, in store.json). */
    let volBytes = sizeBytes
    /**
     * Resizes: blocks at or past this were given no data version since the last shrink past
     * them (a shrink to here must not be refused). `everEnd`: none ever. A version a compaction
     * took out of the index stays in its entry in the log until the entry is freed, and an
     * index rebuilt from the log, or one a power loss took back to an older state, has it
     * again (refusing a shrink it let through before): after those, `everEnd` counts.
     */
    let touchedEnd = 0
    let everEnd = 0

    for (let phase = 0; phase < phases; phase++) {
      const faulty = rng.chance(0.2)
      const rules = faulty ? faultRules(rng, home) : []
      if (replicating) {
        // Read behind the scheduler's back (no I/O step): the seed's interleavings stay as they were.
        const durableSeg = Math.floor(store.status().index.checkpointPosition / SEGMENT_BYTES)
        for (const { id, state } of store.logSegments()) {
          if (id < gate || state === 'current' || id >= durableSeg) continue
          const copies = (store.volumesOf(id) ?? []).map(v => sim.readFile(path.join(home.dirOf(v), segmentFileName(id))))
          const bytes = copies.find(c => c !== undefined)
          if (bytes === undefined) continue
          const seen = sealedBytes.get(id)
          // A mirror copy that fell behind may be repaired meanwhile: one copy must be as sealed.
          if (seen === undefined) sealedBytes.set(id, bytes)
          else if (!copies.some(c => c !== undefined && c.equals(seen))) fail(`phase ${phase}: segment ${id}, at or above the replication gate ${gate}, changed after it was sealed`)
        }
        const next = gate + gateRng.int(Math.max(1, durableSeg - gate + 1))
        for (const id of [...sealedBytes.keys()]) if (id < next) sealedBytes.delete(id)
        gate = next
        log(`replication gate ${gate} (${sealedBytes.size} sealed segments above it checked)`)
      }
      sched.setFaults(rules)
      const crashAfterSteps = rng.chance(0.12) ? rng.int(600) : undefined
      log(`phase ${phase}: faults ${rules.map(r => `${r.code}@${r.match.source}`).join(',') || 'none'}${crashAfterSteps !== undefined ? `, power fails after ${crashAfterSteps} steps` : ''}`)
      let powerLost = false
      /** A compaction of this phase ran to its end (it recycled every sealed segment of free entries alone). */
      let compacted = false
      const problems: string[] = []
      // Resizes of this phase, in their append order (they hold the maintenance lock one at a
      // time), and the writes and discards whose end they may move.
      const resizes: ResizeRecord[] = []
      const sized: Array<{ w: WriteRecord, what: string, end: number }> = []
      const done = (): ResizeRecord[] => resizes.filter(r => r.status === 'done').sort((a, b) => a.ticket - b.ticket)
      const sizeAtEvent = (k: number): number => done().reduce((size, r) => r.mark <= k ? r.to : size, volBytes)
      const sizeAtTicket = (t: number): number => done().reduce((size, r) => r.ticket <= t ? r.to : size, volBytes)
      /** Resizes waiting for their result, each with the furthest end written since it was called. */
      const watching = new Set<{ since: number }>()
      const touch = (end: number): void => {
        touchedEnd = Math.max(touchedEnd, end)
        everEnd = Math.max(everEnd, end)
        for (const w of watching) w.since = Math.max(w.since, end)
      }
      const allowed = (err: unknown, ...codes: ErrorCode[]): boolean => {
        log(`  failed: ${(err as Error).message.slice(0, 160)}`)
        if (powerLost) return true
        if (faulty && (isLogdiskError(err, 'IO') || isLogdiskError(err, 'NO_SPACE'))) return true
        return codes.some(c => isLogdiskError(err, c))
      }
      const unexpected = (what: string, err: unknown): void => {
        problems.push(`${what}: unexpected ${isLogdiskError(err) ? err.code : 'error'}: ${(err as Error).message}`)
      }
      const s = store
      /** One operation; `pick` forces which (the same scale as the seeded draw). */
      const action = async (pick?: number): Promise<void> => {
        const r = pick ?? rng.next()
        for (let i = rng.int(40); i > 0; i--) await sched.io('idle') // start at a seeded moment
        if (r >= 0.3 && r < 0.34) {
          // A discard (TRIM): the range reads as zeros, as a write of zeros would make it.
          const { offset, data } = randomWrite(rng, s.sizeBytes, faulty)
          const w = model.callWrite(offset, Buffer.alloc(data.length))
          count('discard')
          log(`discard ${offset}+${data.length} (w${w.id})`)
          if (resizing) {
            // Its partial edge blocks are written as zeros (data versions), its whole blocks trimmed.
            if (offset % B !== 0 || data.length % B !== 0) touch(Math.ceil((offset + data.length) / B))
            sized.push({ w, what: `discard ${offset}+${data.length}`, end: offset + data.length })
          }
          try {
            await s.discard(offset, data.length)
            model.settle(w, true)
          } catch (err) {
            if (powerLost) return
            if (resizing && isLogdiskError(err, 'OUT_OF_RANGE')) { model.settle(w, 'refused'); count('refused past the end'); log(`  refused: ${(err as Error).message}`); return }
            model.settle(w, false)
            if (!allowed(err, 'NO_SPACE')) unexpected(`discard ${offset}+${data.length}`, err)
          }
        } else if (r < 0.34) {
          const { offset, data } = randomWrite(rng, s.sizeBytes, faulty)
          const w = model.callWrite(offset, data)
          count('write')
          log(`write ${offset}+${data.length} (w${w.id})`)
          if (resizing) {
            touch(Math.ceil((offset + data.length) / B))
            sized.push({ w, what: `write ${offset}+${data.length}`, end: offset + data.length })
          }
          try {
            // Inline (IoOptions.inline) by the seed: a lone write's writev is then synchronous.
            await s.write(offset, data, undefined, { inline: rng.chance(0.5) })
            model.settle(w, true)
          } catch (err) {
            if (powerLost) return // stays pending: it may be in the surviving prefix
            if (resizing && isLogdiskError(err, 'OUT_OF_RANGE')) { model.settle(w, 'refused'); count('refused past the end'); log(`  refused: ${(err as Error).message}`); return }
            model.settle(w, false)
            if (!allowed(err, 'NO_SPACE')) unexpected(`write ${offset}+${data.length}`, err)
          }
        } else if (r < 0.48) {
          const length = rng.range(1, 24 * B)
          const offset = rng.int(s.sizeBytes - length + 1)
          const from = model.settledPrefix()
          count('read')
          try {
            const got = await s.read(offset, length, undefined, { inline: rng.chance(0.5) })
            const bad = model.checkRead(Math.floor(offset / B), got, from, model.mark(), offset % B)
            if (bad >= 0) problems.push(`read ${offset}+${length}: block ${bad} is none of the versions it could have had`)
          } catch (err) {
            // A shrink that came while it read may refuse it.
            if (!allowed(err) && !(resizing && resizes.length > 0 && isLogdiskError(err, 'OUT_OF_RANGE'))) unexpected(`read ${offset}+${length}`, err)
          }
        } else if (r < 0.57) {
          const live = [...points.values()].filter(p => p.kind === 'snapshot' && (p.resolved || p.expect))
          if (live.length === 0) return
          const p = live[rng.int(live.length)]
          const length = rng.range(1, 32 * B)
          const rec = resizing ? s.snapshots().find(x => x.name === p.name) : undefined
          if (resizing && rec === undefined) return
          const snapBytes = rec !== undefined ? s.snapshotSize(rec) : sizeBytes
          const offset = rng.int(snapBytes - length + 1)
          count('read snapshot')
          try {
            const got = await s.readSnapshot(p.name, offset, length, undefined, { inline: rng.chance(0.5) })
            const exp = p.expect ?? model.expectationAt(p.mark)
            const first = Math.floor(offset / B)
            const whole = Buffer.from(exp.data.subarray(first * B, Math.ceil((offset + length) / B) * B))
            got.copy(whole, offset % B)
            const sub: Expectation = { data: exp.data.subarray(first * B, first * B + whole.length), any: new Set([...exp.any].filter(b => b >= first).map(b => b - first)) }
            const bad = checkExpectation(sub, whole, B)
            if (bad >= 0) problems.push(`read of snapshot ${p.name} at ${offset}+${length}: block ${first + bad} differs from the snapshot`)
          } catch (err) {
            if (!(p.deleting && isLogdiskError(err, 'NOT_FOUND')) && !allowed(err)) unexpected(`read snapshot ${p.name}`, err)
          }
        } else if (r < 0.64) {
          const covered = model.settledPrefix()
          count('flush')
          try {
            await s.flush()
            model.markDurable(covered)
          } catch (err) {
            if (!allowed(err)) unexpected('flush', err)
          }
        } else if (r < 0.68) {
          count('checkpoint')
          try {
            await s.checkpoint()
          } catch (err) {
            if (!allowed(err)) unexpected('checkpoint', err)
          }
        } else if (r < 0.735) {
          const kind = rng.chance(0.5) ? 'snapshot' : 'sync'
          const name = `${kind === 'snapshot' ? 's' : 'p'}${nextName++}`
          const p: Point = { kind, name, mark: model.mark(), ticket: lockTickets, resolved: false, timeMs: 0 }
          points.set(name, p)
          count(kind)
          log(`${kind} ${name} at mark ${p.mark}`)
          try {
            if (kind === 'snapshot') p.timeMs = (await s.snapshot({ name })).timeMs
            else p.timeMs = (await s.syncPoint(name)).timeMs
            p.resolved = true
            model.markDurable(p.mark)
          } catch (err) {
            // Refused: it does not exist. Failed by a fault or a power loss: it may exist.
            if (!allowed(err, 'NO_SPACE')) unexpected(`${kind} ${name}`, err) // a full pool refuses markers too
            else if (!powerLost && !faulty) points.delete(name)
          }
        } else if (r < 0.755) {
          const snaps = [...points.values()].filter(p => p.kind === 'snapshot' && p.resolved && !p.deleting)
          if (snaps.length === 0) return
          const p = snaps[rng.int(snaps.length)]
          p.deleting = true
          count('delete')
          log(`delete ${p.name}`)
          try {
            await s.deleteSnapshot(p.name)
            points.delete(p.name)
          } catch (err) {
            // Refused: still there. Failed by a fault or a power loss: it may be gone.
            if (!allowed(err, 'NO_SPACE')) unexpected(`delete ${p.name}`, err)
            else if (!powerLost && !faulty) p.deleting = false
          }
        } else if (r < 0.83) {
          const mode = rng.int(4)
          const freedInBatches = (report: CompactionReport): void => {
            compacted = true
            if (report.freeBatches > 0) count('compaction freed versions in batches')
            if (report.trimsMoved > 0) count('compaction moved trims')
          }
          const snaps = s.snapshots()
          try {
            if (mode === 0) {
              count('compact into baseline')
              log('compact into baseline')
              freedInBatches((await s.compactIntoBaseline()).compaction)
            } else if (mode === 1 && snaps.length > 0) {
              const snap = snaps[rng.int(snaps.length)].name
              count('compact snapshot')
              log(`compact snapshot ${snap}`)
              freedInBatches(await s.compact({ snapshot: snap }))
            } else {
              const cleanBelow = [0, 0.2, 0.5, 0.9][rng.int(4)]
              count('compact')
              log(`compact cleanBelow ${cleanBelow}`)
              freedInBatches(await s.compact({ cleanBelow }))
            }
          } catch (err) {
            if (!allowed(err, 'BUSY', 'NOT_FOUND')) unexpected('compact', err)
          }
        } else if (r < 0.88) {
          if (!archive) return
          count('archive')
          log('archive')
          try {
            await s.archive({ olderThanMs: rng.chance(0.5) ? rng.int(200) : 0, workingSet: rng.chance(0.5) ? rng.range(1, 6) : 0 })
          } catch (err) {
            if (!allowed(err)) unexpected('archive', err)
          }
        } else if (r < 0.9) {
          count('pool grow')
          log(`pool grow: ${home.grow()}`)
        } else if (r < 0.95) {
          // One drain at a time, as the pool does (a second one is BUSY there).
          const volumes = home.volumes().filter(v => !home.draining.has(v))
          if (volumes.length <= copies || home.draining.size > 0) return
          const from = volumes[rng.int(volumes.length)]
          home.draining.add(from)
          count('pool drain')
          log(`pool drain ${from}: segments ${home.segmentsOf(from).join(',')}; placement ${[...s.segmentPlacement()].map(([id, v]) => `${id}:${v.join('+')}`).join(' ')}`)
          try {
            if (opts.drainDiscardsNext === true) await s.discardNextSegment()
            for (const id of home.segmentsOf(from)) {
              // As Pool.drain: a repair that held the maintenance lock first may have put a
              // copy on the volume chosen here; the store refuses that move (BUSY) and the
              // drain chooses again (that volume holds a copy now, so it is not chosen twice).
              // (home.candidates draws from the seed's rng: called again only on a refusal, so
              // every other run replays as before.)
              let to = home.candidates(s.volumesOf(id) ?? [])[0]
              let moved = false
              while (to !== undefined && !moved) {
                log(`  relocate ${id} ${from} -> ${to}`)
                try {
                  await s.relocateSegment(id, from, to)
                  moved = true
                } catch (err) {
                  if (!isLogdiskError(err, 'BUSY') || !(s.volumesOf(id) ?? []).includes(to)) throw err
                  log(`    refused: ${to} got a copy meanwhile`)
                  to = home.candidates(s.volumesOf(id) ?? [])[0]
                }
              }
              if (!moved) break
            }
            if (home.segmentsOf(from).length === 0) home.drop(from)
            else home.draining.delete(from)
          } catch (err) {
            home.draining.delete(from)
            if (!allowed(err, 'NOT_FOUND', 'NO_SPACE')) unexpected(`drain ${from}`, err)
          }
        } else {
          if (copies < 2) return
          count('repair')
          log('mirror repair')
          try {
            await s.repairCopies(copies, async (_id, exclude) => {
              const to = home.candidates(exclude)[0]
              if (!to) throw new LogdiskError('NO_SPACE', 'the simulated pool has no room for another copy')
              home.occupied(_id, [to]) // reserved at once, as the pool's placeCopy does
              return to
            })
          } catch (err) {
            if (!allowed(err, 'NO_SPACE')) unexpected('repair', err)
          }
        }
      }
      /**
       * A grow or a shrink (resizeRng) among the other actions: a grow by a few blocks (absolute
       * or relative), a shrink to the end of what was written, below it (refused while a block
       * there holds data), or after discarding the tail first, as a user shrinking the
       * filesystem would; writes drawn meanwhile still aim at the old end.
       */
      async function tailWrite (lo: number, hi: number, delay: number, length: number, at: number): Promise<void> {
        for (let i = delay; i > 0; i--) await sched.io('idle')
        const end = Math.min(hi * B, s.sizeBytes)
        if (end - lo * B < length) return
        const offset = lo * B + Math.floor(at * (end - lo * B - length + 1))
        const data = resizeRng.bytes(length)
        const w = model.callWrite(offset, data)
        count('write')
        log(`write into the tail ${offset}+${length} (w${w.id})`)
        touch(Math.ceil((offset + length) / B))
        sized.push({ w, what: `write ${offset}+${length}`, end: offset + length })
        try {
          await s.write(offset, data)
          model.settle(w, true)
        } catch (err) {
          if (powerLost) return
          if (isLogdiskError(err, 'OUT_OF_RANGE')) { model.settle(w, 'refused'); count('refused past the end'); log(`  refused: ${(err as Error).message}`); return }
          model.settle(w, false)
          if (!allowed(err, 'NO_SPACE')) unexpected(`write ${offset}+${length}`, err)
        }
      }
      async function resizeAction (): Promise<void> {
        for (let i = resizeRng.int(60); i > 0; i--) await sched.io('idle')
        const cur = s.sizeBytes / B
        const r = resizeRng.next()
        let arg: number
        let grow = false
        let what: string
        if (r < 0.4 && cur < capacityBytes / B) {
          const by = resizeRng.range(1, Math.min(64, Math.floor((capacityBytes / B - cur) / 3)) || 1)
          grow = resizeRng.chance(0.5) && cur + 3 * by <= capacityBytes / B // three relative grows at once still fit
          arg = grow ? by * B : Math.min(capacityBytes / B, cur + by) * B
          what = grow ? `grow +${by}` : `grow to ${arg / B}`
        } else {
          if (cur <= MIN_RESIZE_BLOCKS) return
          const to = r < 0.6 && touchedEnd < cur
            ? Math.max(MIN_RESIZE_BLOCKS, touchedEnd)
            : resizeRng.range(MIN_RESIZE_BLOCKS, cur - 1)
          arg = to * B
          what = `shrink to ${to}`
          if (resizeRng.chance(0.4)) {
            // The tail discarded first (its trims make no data versions).
            const w = model.callWrite(arg, Buffer.alloc((cur - to) * B))
            sized.push({ w, what: `discard ${arg}+${(cur - to) * B}`, end: cur * B })
            log(`discard the tail ${arg}+${(cur - to) * B} (w${w.id}) before a shrink`)
            count('discard')
            try {
              await s.discard(arg, (cur - to) * B)
              model.settle(w, true)
            } catch (err) {
              if (powerLost) return
              if (isLogdiskError(err, 'OUT_OF_RANGE')) { model.settle(w, 'refused'); count('refused past the end'); log(`  refused: ${(err as Error).message}`); return }
              model.settle(w, false)
              if (!allowed(err, 'NO_SPACE')) unexpected(`discard ${arg}+${(cur - to) * B}`, err)
              return
            }
          }
        }
        const rec: ResizeRecord = { what, mark: -1, ticket: -1, from: 0, to: 0, status: 'pending' }
        resizes.push(rec)
        // A write called while this resize waits may land after it in the log (after a grow
        // that came between): a shrink's result must not take its blocks back (seed 7670016).
        const watch = { since: 0 }
        watching.add(watch)
        const shrinking = !grow && !what.startsWith('grow')
        count(shrinking ? 'shrink' : 'grow')
        log(`resize: ${what} (${cur} blocks when called; written below ${touchedEnd})`)
        // Writes into the tail while a shrink waits for its turn: each lands before it (and the
        // shrink is refused) or is refused itself (resize-write-race).
        const racers = shrinking && resizeRng.chance(0.5)
          ? Array.from({ length: resizeRng.range(1, 3) }, () => tailWrite(arg / B, cur, resizeRng.int(40), resizeRng.range(1, 6) * B - (resizeRng.chance(0.3) ? resizeRng.range(1, B - 1) : 0), resizeRng.next()))
          : []
        try {
          const resized = s.resize(arg, {
            grow,
            ready: (fromBytes, toBytes) => {
              if (rec.mark >= 0) return
              if (section === undefined) throw new Error('resize: ready outside a watched append-lock section')
              Object.assign(rec, { mark: section.mark, ticket: section.ticket, from: fromBytes, to: toBytes })
            }
          })
          await Promise.allSettled([resized, ...racers])
          const got = await resized
          if (rec.mark < 0 || got.fromBytes !== rec.from || got.toBytes !== rec.to) problems.push(`resize ${what}: resolved ${got.fromBytes} -> ${got.toBytes}, its ready saw ${rec.from} -> ${rec.to}`)
          rec.status = 'done'
          count(rec.to < rec.from ? 'shrank' : rec.to > rec.from ? 'grew' : 'resized to the same size')
          log(`  resized ${rec.from / B} -> ${rec.to / B} blocks at mark ${rec.mark}`)
          if (rec.to < rec.from) touchedEnd = Math.min(touchedEnd, Math.max(rec.to / B, watch.since))
        } catch (err) {
          if (powerLost) return
          rec.status = 'failed'
          if (isLogdiskError(err, 'BAD_ARGUMENT') && !grow) {
            log(`  refused: ${(err as Error).message.slice(0, 160)}`)
            count('shrink refused')
            // Refused only while a block past the new end holds data: one was written there.
            if (touchedEnd <= arg / B) problems.push(`resize ${what}: refused though no block at or past ${arg / B} was ever written (below ${touchedEnd}): ${(err as Error).message}`)
          } else if (!allowed(err)) unexpected(`resize ${what}`, err)
        } finally {
          watching.delete(watch)
        }
      }
      // Now and then a busy phase: compactions under a burst of writes that rolls segments
      // while they run (where a pass that judged too much history would free new writes).
      const busy = rng.chance(0.15)
      const actions = busy
        ? [action(0.8), action(0.8), ...Array.from({ length: rng.range(20, 40) }, () => action(rng.chance(0.15) ? 0.32 : 0.1))]
        : Array.from({ length: rng.range(2, 14) }, () => action())
      if (busy) log('busy phase: compactions under a burst of writes')
      if (bringingBack && bringBackRng.chance(0.6)) {
        // One or two segments brought back from the archive while everything else runs.
        actions.push((async () => {
          for (let i = bringBackRng.int(40); i > 0; i--) await sched.io('idle')
          for (let n = bringBackRng.range(1, 2); n > 0; n--) {
            const away = s.logSegments().filter(x => x.state === 'archived' && s.volumesOf(x.id) === undefined).map(x => x.id)
            if (away.length === 0) return
            const id = away[bringBackRng.int(away.length)]
            count('bring back')
            log(`bring back segment ${id}`)
            try {
              const bytes = await s.bringBackSegment(id)
              log(`  brought back ${id}: ${bytes} bytes; placement ${(s.volumesOf(id) ?? []).join('+')}`)
            } catch (err) {
              if (!allowed(err, 'NO_SPACE', 'BUSY')) unexpected(`bring back ${id}`, err)
            }
          }
        })())
      }
      if (resizing) {
        for (let n = resizeRng.chance(0.6) ? resizeRng.range(1, 3) : 0; n > 0; n--) actions.push(resizeAction())
      }
      const all = Promise.allSettled(actions)
      const run = await sched.run(all, { crashAfterSteps })
      powerLost = run.powerLost
      for (const r of await all) if (r.status === 'rejected') problems.push(`action threw: ${(r.reason as Error).stack}`)
      sched.setFaults([])
      if (problems.length > 0 && !powerLost) fail(`phase ${phase}: ${problems[0]}`)
      if (resizing && !powerLost) {
        // Every resize settled: a shrink went through only with nothing but zeros (or unknown
        // bytes of a failed write) past its end at its place in the append order, and every
        // write or discard reaching past the end as it was at its own place was refused.
        const zeros = Buffer.alloc(B)
        for (const r of resizes) {
          if (r.status !== 'done' || r.to >= r.from) continue
          for (let b = r.to / B; b < r.from / B; b++) {
            const st = model.stateAt(b, r.mark)
            if (st !== null && !st.equals(zeros)) fail(`phase ${phase}: resize ${r.what} (${r.from / B} -> ${r.to / B} blocks at mark ${r.mark}) went through while block ${b} past the new end held data`)
          }
        }
        for (const { w, what, end } of sized) {
          const size = sizeAtEvent(w.firstEvent)
          if (w.status === 'acked' && end > size) fail(`phase ${phase}: ${what} (w${w.id}) acknowledged, past the end of the ${size / B}-block volume (a shrink came before it)`)
          if (w.status === 'refused' && end <= size) fail(`phase ${phase}: ${what} (w${w.id}) refused OUT_OF_RANGE inside the ${size / B}-block volume`)
        }
      }
      /**
       * The volume's size after the phase: the last resize acknowledged; after a power loss
       * also the one in flight (store.json is written as the resize ends, and it is not undone).
       */
      const checkSize = (what: string): void => {
        const acked = sizeAtEvent(Infinity)
        if (store.sizeBytes === acked) return
        const inFlight = powerLost ? resizes.find(r => r.status === 'pending' && r.mark >= 0 && r.to === store.sizeBytes) : undefined
        if (inFlight === undefined) fail(`${what}: the volume has ${store.sizeBytes / B} blocks; the resizes acknowledged left ${acked / B}`)
        else inFlight.status = 'done'
      }
      /**
       * After a reopen that may have lost what no flush covered: the image holds every flushed
       * write and a prefix of the rest, and the points agree with it (fail throws otherwise).
       */
      const checkLossy = async (what: string): Promise<void> => {
        checkSize(what)
        const observed = await drive(store.read(0, store.sizeBytes))
        const prefix = model.checkPrefix(observed)
        if ('error' in prefix) fail(`${what}: ${prefix.error}`)
        else await drive(reconcilePoints(store, points, model, prefix.prefix, fail, what, p => sizeAtTicket(p.ticket)))
        model.reset(observed)
      }
      // Every flush fails now (writeback-guard.ts): what a user does is unmount and mount again (a
      // close that releases the store without a final sync). Writes no flush covered may then
      // be lost as after a kill -9 (a mirror copy dropped since the last flush may not be on
      // record), so the image is checked as after a power loss: a prefix of them survives.
      const remounted = !powerLost && store.writebackFailed
      if (remounted) {
        report.remounts++
        touchedEnd = everEnd
        log('a write-back failed: close and reopen (no power loss)')
        await drive(store.close())
        home.resetAccounting()
        store = await drive(open())
        await checkLossy(`phase ${phase}, after a remount`)
      }

      if (powerLost) {
        report.crashes++
        touchedEnd = everEnd
        log('power lost: abandon, crash, reopen')
        await drive(store.abandon())
        sim.crash(crashRng, { pages: opts.crashPages })
        indexes.crash(crashRng)
        if (opts.rebuildAfterPowerLoss === true && crashRng.chance(0.5)) {
          log('index lost with the power: full rebuild')
          indexes.destroy(path.join(dir, 'index'))
        }
        sched.restorePower()
        home.resetAccounting()
        store = await drive(open())
        await checkLossy(`phase ${phase}, after power loss`)
      } else if (!remounted) {
        checkSize(`phase ${phase}`)
        const observed = await drive(store.read(0, store.sizeBytes))
        const bad = checkExpectation(model.expectationAt(model.mark()), observed, B)
        if (bad >= 0) fail(`phase ${phase}: current image block ${bad} differs from the model at rest`)
        await drive(reconcilePoints(store, points, model, model.mark(), fail, `phase ${phase}`, p => sizeAtTicket(p.ticket)))
        model.reset(observed)
        // No segment of free entries alone outlives a compaction that ran to its end, a rebuild's
        // either (its entries have no summaries: such segments stayed for good). Only where
        // passes may go (below the replication gate) and only in a phase where nothing failed:
        // a failed pass may stop between its free headers and its recycling.
        if (compacted && !faulty) {
          for (const { id, state } of store.logSegments()) {
            if (state === 'current' || state === 'archived' || (replicating && id >= gate)) continue
            const copy = (store.volumesOf(id) ?? []).map(v => sim.readFile(path.join(home.dirOf(v), segmentFileName(id)))).find(c => c !== undefined)
            if (copy !== undefined && await holdsOnlyFreeEntries(bytesHandle(copy), B)) fail(`phase ${phase}: segment ${id} (${state}) holds free entries alone after a compaction that ran to its end: not recycled`)
          }
        }
      }
      volBytes = store.sizeBytes
      await drive(checkPoints(store, points, mayRefuse, phase, fail, count))
      const verify = await drive(store.verify())
      if (!verify.ok && opts.inspect) await opts.inspect({ store, sim, home, scheduler: sched })
      if (!verify.ok) fail(`phase ${phase}: verify: ${verify.problems.join('; ')}`)

      const r = rng.next()
      if (r < 0.08) {
        report.reopens++
        log('clean reopen')
        await drive(store.close())
        home.resetAccounting()
        store = await drive(open())
      } else if (r < 0.12) {
        report.rebuilds++
        touchedEnd = everEnd
        log('index rebuild (index deleted)')
        await drive(store.close())
        indexes.destroy(path.join(dir, 'index'))
        home.resetAccounting()
        store = await drive(open())
      }
      if (r < 0.12) {
        if (store.sizeBytes !== volBytes) fail(`phase ${phase}: the volume's size changed across a ${r < 0.08 ? 'reopen' : 'rebuild'}: ${volBytes / B} -> ${store.sizeBytes / B} blocks`)
        const observed = await drive(store.read(0, volBytes))
        if (!observed.equals(model.base.subarray(0, volBytes))) {
          await opts.inspect?.({ store, sim, home, scheduler: sched })
          const blocks = [...Array(volBytes / B).keys()].filter(b => !observed.subarray(b * B, (b + 1) * B).equals(model.base.subarray(b * B, (b + 1) * B)))
          fail(`phase ${phase}: the current image changed across a ${r < 0.08 ? 'reopen' : 'rebuild'} (blocks ${blocks.slice(0, 10).join(', ')}${blocks.length > 10 ? ', ...' : ''})`)
        }
        await drive(checkPoints(store, points, mayRefuse, phase, fail, count))
      }
    }
    await drive(store.close())
    report.steps = sched.steps
    report.maxWritesInFlight = sim.maxWritesInFlight
    report.syncOps = { ...sim.syncOps }
    report.faultsInjected = sched.faultsInjected
    return report
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * After a phase: points whose call did not resolve (power loss, a fault) exist or not; those
 * that exist must lie inside the surviving prefix. Resolved ones must exist unless deleted.
 * Every point still present gets its expectation from the model.
 */
async function reconcilePoints (
  store: Store, points: Map<string, Point>, model: ImageModel, prefix: number,
  fail: (message: string) => never, where: string, sizeOf: (p: Point) => number
): Promise<void> {
  const present = new Set(store.snapshots().map(x => x.name))
  for (const p of [...points.values()]) {
    if (p.kind === 'snapshot') {
      if (!present.has(p.name)) {
        if (p.resolved && !p.deleting) fail(`${where}: snapshot ${p.name} was taken (durable) and is gone`)
        points.delete(p.name)
        continue
      }
      p.deleting = false
    } else if (!p.resolved && !(await hasSync(store, p.name))) {
      points.delete(p.name)
      continue
    }
    if (p.expect) continue
    if (p.mark > prefix) fail(`${where}: ${p.kind} ${p.name} exists but writes before it were lost`)
    p.resolved = true
    p.expect = model.expectationAt(p.mark)
    p.sizeBytes = sizeOf(p)
  }
}

async function hasSync (store: Store, note: string): Promise<boolean> {
  try {
    await store.resolvePoint(note)
    return true
  } catch (err) {
    if (isLogdiskError(err, 'NOT_FOUND')) return false
    return true // exists but refused (older than history): still exists
  }
}

/** Every snapshot image and every sync point's restore against the model. */
async function checkPoints (
  store: Store, points: Map<string, Point>, mayRefuse: (p: Point) => boolean, phase: number,
  fail: (message: string) => never, count: (op: string) => void
): Promise<void> {
  const snaps = new Map(store.snapshots().map(s => [s.name, s]))
  for (const name of snaps.keys()) if (!points.has(name)) fail(`phase ${phase}: the store lists a snapshot ${name} that was never taken or was deleted`)
  for (const p of points.values()) {
    if (!p.expect) continue
    let got: Buffer
    if (p.kind === 'snapshot') {
      if (!snaps.has(p.name)) fail(`phase ${phase}: snapshot ${p.name} is missing`)
      count('check snapshot')
      // The size at its cut, whatever the volume was resized to since.
      const size = store.snapshotSize(snaps.get(p.name)!)
      if (size !== p.sizeBytes) fail(`phase ${phase}: snapshot ${p.name} has ${size / B} blocks; the volume had ${(p.sizeBytes ?? 0) / B} at its cut`)
      got = await store.readSnapshot(p.name, 0, size)
    } else {
      count('check restore')
      let seq: number
      try {
        seq = (await store.resolvePoint(p.name)).seq
      } catch (err) {
        // Given up: refused by its sequence number, or its marker already freed (marker-life.ts).
        if (mayRefuse(p) && (isLogdiskError(err, 'BAD_ARGUMENT') || isLogdiskError(err, 'NOT_FOUND'))) continue
        return fail(`phase ${phase}: restore --at ${p.name}: ${(err as Error).message}`)
      }
      const size = store.sizeAt(seq)
      if (size !== p.sizeBytes) fail(`phase ${phase}: restore --at ${p.name} (seq ${seq}) has ${size / B} blocks; the volume had ${(p.sizeBytes ?? 0) / B} at the point`)
      got = Buffer.alloc(size)
      try {
        for await (const { block, data } of store.imageAt(seq)) {
          if (block * B >= size) fail(`phase ${phase}: restore --at ${p.name} (seq ${seq}) has a version of block ${block}, past its end (${size / B} blocks)`)
          data.copy(got, block * B)
        }
      } catch (err) {
        return fail(`phase ${phase}: restore --at ${p.name} (seq ${seq}): ${(err as Error).message}`)
      }
    }
    const bad = checkExpectation(p.expect, got, B)
    if (bad >= 0) fail(`phase ${phase}: ${p.kind === 'snapshot' ? 'snapshot' : 'restore --at'} ${p.name} block ${bad} is wrong (got ${got.subarray(bad * B, bad * B + 8).toString('hex')}, expected ${p.expect.data.subarray(bad * B, bad * B + 8).toString('hex')})`)
    p.expect = { data: got, any: new Set() } // wildcards are settled now
  }
}

/** A grow or a shrink of the simulation (SimulationOptions.resize) and, once its `ready` ran, its place in the append order. */
interface ResizeRecord {
  what: string
  /** The model's mark and the append-lock ticket when it took the lock (-1 before). */
  mark: number
  ticket: number
  from: number
  to: number
  status: 'pending' | 'done' | 'failed'
}

function randomWrite (rng: Rng, sizeBytes: number, aligned: boolean): { offset: number, data: Buffer } {
  const r = rng.next()
  let length = r < 0.5 ? rng.range(1, 2 * B) : r < 0.85 ? rng.range(1, 64 * 1024) : rng.range(1, 300 * 1024)
  length = Math.min(length, sizeBytes)
  if (aligned || rng.chance(0.5)) length = Math.max(B, Math.floor(length / B) * B)
  let offset = rng.int(sizeBytes - length + 1)
  if (aligned || length % B === 0) offset = Math.floor(offset / B) * B
  return { offset, data: rng.bytes(length) }
}

/** A read-only handle on bytes read behind the scheduler's back (no I/O step). */
function bytesHandle (bytes: Buffer): FileHandle {
  const refuse = async (): Promise<never> => { throw new LogdiskError('READ_ONLY', 'a copy of bytes') }
  return {
    read: async (buf, at, length, position) => position >= bytes.length ? 0 : bytes.copy(buf, at, position, Math.min(bytes.length, position + length)),
    writev: refuse,
    datasync: refuse,
    truncate: refuse,
    size: async () => bytes.length,
    close: async () => {}
  }
}

/** Which operations fail in a faulty phase: a few labels, each with a chance per operation. */
function faultRules (rng: Rng, home: SimHome): FaultRule[] {
  const volumes = home.volumes()
  const one = volumes[rng.int(volumes.length)]
  const choices: FaultRule[] = [
    { match: new RegExp(`^write .*/${one}/`), code: 'EIO', chance: 0.3 },
    { match: /^write /, code: 'ENOSPC', chance: 0.05 },
    { match: /^fdatasync /, code: 'EIO', chance: 0.1 },
    { match: /^index\.commit/, code: 'EIO', chance: 0.2 },
    { match: /^archive\./, code: 'EIO', chance: 0.3 },
    { match: /^read .*seg-/, code: 'EIO', chance: 0.05 },
    { match: /^punch /, code: 'EIO', chance: 0.3 },
    { match: /^open .*seg-/, code: 'ENOSPC', chance: 0.2 }
  ]
  const out: FaultRule[] = []
  for (const c of choices) if (rng.chance(0.3)) out.push(c)
  return out.length > 0 ? out : [choices[rng.int(choices.length)]]
}

/** A store logger writing each line into the simulation's trace (storeLog). */
function traceLogger (trace: (line: string) => void): Logger {
  const line = (level: string) => (fields: object, msg: string): void => trace(`${level} ${msg} ${JSON.stringify(fields)}`)
  return { info: line('log'), warn: line('WARN'), error: line('ERROR') }
}
