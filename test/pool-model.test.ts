import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { openStore } from '../src/app/open'
import type { Pool } from '../src/pool/pool'
import { defaultPolicy, writePolicy } from '../src/policy/policy'
import { Store } from '../src/store/store'
import { parseSegmentFileName } from '../src/store/format'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

/**
 * Property test of the storage pool at the library level: a store opened with openStore on
 * four small pool volumes (tmp directories holding markers; segment files on SimFileLayer, so
 * a crash loses what was not synced), driven by random writes, flushes, pool drains, removals,
 * capacity changes, daemon ticks (grow and shrink by policy), clean reopens, kill -9, power
 * loss, and power loss in the middle of a drain. Every block must read back what was last
 * written; after a power loss, each block holds its value at the last flush or one written
 * since. Rerun a failure with POOL_MODEL_SEED=<the printed seed>.
 */
const SEED = Number(process.env.POOL_MODEL_SEED ?? 0x9001)
const NUM_RUNS = Number(process.env.POOL_MODEL_RUNS ?? 40)
const B = 4096
const SIZE = 4 * 1024 * 1024
const BLOCKS = SIZE / B
const SEGMENT = 1024 * 1024 + 64 * 1024 // the smallest round size that fits a 256-block entry
const VOLUMES = 4
const zero = Buffer.alloc(B)

interface Model {
  /** What reads must return now. */
  cur: Buffer
  /** What the volume held at the last durable point (flush, close, recovery). */
  durable: Buffer
  /** Block versions written since that point, per block, oldest first. */
  since: Map<number, Buffer[]>
}

interface Real {
  dir: string
  vols: string[]
  mirror: number
  capacity: number
  sim: SimFileLayer
  store: Store
  pool: Pool
  stats: Stats
}

interface Stats { drains: number, moved: number, grew: number, noSpace: number, crashes: number, midDrainCrashes: number, mirrored: number, lost: number, repaired: number, yielded: number }

type Cmd = fc.AsyncCommand<Model, Real>

const open = async (r: Real): Promise<{ store: Store, pool: Pool }> => guardPlace(await openStore(r.dir, { fileLayer: r.sim, checkpointIntervalMs: 0 }))

/**
 * The pool refuses a new segment (NO_SPACE) only when it has no room: fewer assigned volumes
 * with room for a segment than `mirror` (counting a volume being drained: writes come
 * first), and no spare to take. Judged from the pool as it was when place() was called: its
 * body runs to the refusal without waiting. A segment made ahead of its roll may be refused
 * anyway (the roll places it again).
 */
function guardPlace (opened: { store: Store, pool: Pool }): { store: Store, pool: Pool } {
  const { pool } = opened
  const place = pool.place.bind(pool)
  pool.place = (id, opts) => {
    const before = pool.status()
    return place(id, opts).catch((err: unknown) => {
      if (isLogdiskError(err, 'NO_SPACE') && opts?.ahead !== true) {
        const room = before.volumes.filter(v => v.state === 'assigned' && v.capacityBytes - v.usedBytes >= SEGMENT).length
        const spare = before.volumes.some(v => v.state === 'spare')
        if (room >= pool.copies() || (spare && room + 1 >= pool.copies())) {
          throw new Error(`segment ${id} refused with room in the pool (${room} assigned volume(s) with room${spare ? ', a spare' : ''}; mirror=${pool.copies()}): ${(err as Error).message}`)
        }
      }
      throw err
    })
  }
  return opened
}

function pattern (length: number, fill: number): Buffer {
  return new Rng(fill).bytes(length)
}

/** Segment files of this store on volume `v` (in the simulated disk). */
function segmentsOn (r: Real, v: number): number[] {
  const dir = path.join(r.vols[v], r.store.config.uuid)
  return r.sim.files().filter(f => path.dirname(f) === dir).map(f => parseSegmentFileName(path.basename(f))).filter((id): id is number => id !== undefined)
}

function describeBlock (b: number, got: Buffer, m: Model): string {
  const name = (buf: Buffer): string => buf.equals(zero) ? 'zeros' : buf.subarray(0, 4).toString('hex')
  return `block ${b}: got ${name(got)}, expected ${name(m.cur.subarray(b * B, (b + 1) * B))} (durable ${name(m.durable.subarray(b * B, (b + 1) * B))}, since: ${(m.since.get(b) ?? []).map(name).join(' ') || 'nothing'})`
}

/** After a clean restart or kill -9 (page cache kept): exactly the model. */
async function checkExact (what: string, m: Model, r: Real): Promise<void> {
  const got = await r.store.read(0, SIZE)
  for (let b = 0; b < BLOCKS; b++) {
    if (!got.subarray(b * B, (b + 1) * B).equals(m.cur.subarray(b * B, (b + 1) * B))) throw new Error(`${what}: ${describeBlock(b, got.subarray(b * B, (b + 1) * B), m)}`)
  }
}

/** After a power loss: each block as of the last durable point or a version written since. */
async function checkAfterCrash (what: string, m: Model, r: Real): Promise<void> {
  const got = await r.store.read(0, SIZE)
  for (let b = 0; b < BLOCKS; b++) {
    const g = got.subarray(b * B, (b + 1) * B)
    if (g.equals(m.durable.subarray(b * B, (b + 1) * B))) continue
    if ((m.since.get(b) ?? []).some(v => v.equals(g))) continue
    throw new Error(`${what}: ${describeBlock(b, g, m)}`)
  }
  got.copy(m.cur)
  markDurable(m)
}

function markDurable (m: Model): void {
  m.cur.copy(m.durable)
  m.since.clear()
}

function applyBlock (m: Model, b: number, data: Buffer): void {
  data.copy(m.cur, b * B)
  const list = m.since.get(b) ?? []
  list.push(Buffer.from(data))
  m.since.set(b, list)
}

/** A store that keeps no index of its own beyond the tests': the checks of the pool after each command. */
function checkPlacement (what: string, r: Real): void {
  const uuid = r.store.config.uuid
  for (const [id, volumes] of r.store.segmentPlacement()) {
    for (const v of volumes) {
      const i = r.vols.findIndex(d => r.pool.status().volumes.find(s => s.id === v)?.dir === d)
      if (i < 0) throw new Error(`${what}: segment ${id} is recorded on volume ${v}, which is not one of the test's`)
      if (!segmentsOn(r, i).includes(id)) throw new Error(`${what}: segment ${id} is recorded on ${r.vols[i]} but its file is not there`)
    }
  }
  // The pool's accounting (white box: what place() judges room by) against the index: every
  // segment counted on a volume is recorded there, but the one made ahead of its roll (a
  // newer id than any recorded). A count left behind would shrink the volume for good.
  const recorded = new Map<string, Set<number>>()
  let newest = -1
  for (const [id, volumes] of r.store.segmentPlacement()) {
    newest = Math.max(newest, id)
    for (const v of volumes) recorded.set(v, (recorded.get(v) ?? new Set()).add(id))
  }
  for (const [v, ids] of (r.pool as unknown as { segmentsOn: Map<string, Set<number>> }).segmentsOn) {
    const stray = [...ids].filter(id => !(recorded.get(v)?.has(id) ?? false) && id <= newest)
    if (stray.length > 0) throw new Error(`${what}: the pool counts segment(s) ${stray.join(',')} on volume ${v}, which the index does not record there`)
  }
  for (const v of r.pool.status().volumes) {
    const i = r.vols.indexOf(v.dir)
    if (i < 0) continue
    if (v.state === 'spare' && segmentsOn(r, i).length > 0) {
      throw new Error(`${what}: ${v.dir} is spare but holds segments ${segmentsOn(r, i).join(',')} of store ${uuid}`)
    }
  }
}

class WriteCmd implements Cmd {
  constructor (readonly block: number, readonly count: number, readonly fill: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const count = Math.min(this.count, BLOCKS - this.block)
    const data = pattern(count * B, this.fill)
    try {
      await r.store.write(this.block * B, data)
    } catch (err) {
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      // A full pool: the first entries of the write may be in the log, the rest not.
      r.stats.noSpace++
      const got = await r.store.read(this.block * B, count * B)
      let landed = 0
      while (landed < count && got.subarray(landed * B, (landed + 1) * B).equals(data.subarray(landed * B, (landed + 1) * B))) landed++
      for (let i = landed; i < count; i++) {
        if (!got.subarray(i * B, (i + 1) * B).equals(m.cur.subarray((this.block + i) * B, (this.block + i + 1) * B))) {
          throw new Error(`${this}: NO_SPACE after ${landed} blocks, but block ${this.block + i} changed`)
        }
      }
      for (let i = 0; i < landed; i++) applyBlock(m, this.block + i, data.subarray(i * B, (i + 1) * B))
      return
    }
    for (let i = 0; i < count; i++) applyBlock(m, this.block + i, data.subarray(i * B, (i + 1) * B))
  }

  toString (): string { return `write(${this.block}, ${this.count}, ${this.fill})` }
}

class ReadCmd implements Cmd {
  constructor (readonly block: number, readonly count: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const count = Math.min(this.count, BLOCKS - this.block)
    const got = await r.store.read(this.block * B, count * B)
    for (let i = 0; i < count; i++) {
      const b = this.block + i
      if (!got.subarray(i * B, (i + 1) * B).equals(m.cur.subarray(b * B, (b + 1) * B))) throw new Error(`${this}: ${describeBlock(b, got.subarray(i * B, (i + 1) * B), m)}`)
    }
  }

  toString (): string { return `read(${this.block}, ${this.count})` }
}

class FlushCmd implements Cmd {
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    await r.store.flush()
    markDurable(m)
  }

  toString (): string { return 'flush()' }
}

/** Drains a volume by hand (what `pool remove` does first) and releases it to spare. */
class DrainCmd implements Cmd {
  constructor (readonly volume: number) {}
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> {
    try {
      r.stats.moved += await r.pool.drain(r.vols[this.volume])
      r.stats.drains++
    } catch (err) {
      if (isLogdiskError(err, 'NO_SPACE')) { r.stats.noSpace++; return }
      throw err
    }
    if (segmentsOn(r, this.volume).length > 0) throw new Error(`${this}: segments ${segmentsOn(r, this.volume).join(',')} are still on the drained volume`)
    const v = r.pool.status().volumes.find(s => s.dir === r.vols[this.volume])
    if (v?.state !== 'spare') throw new Error(`${this}: the drained volume is ${v?.state}, not spare`)
    checkPlacement(String(this), r)
  }

  toString (): string { return `drain(V${this.volume})` }
}

/**
 * A drain with writes going on (a shrink tick, or `pool remove`, under a running writer): the
 * writes start after `steps` turns of the event loop, one after the other, while the drain
 * moves segments. Writes come first: one whose segment finds room only on the volume being
 * drained goes there and the drain stops (NO_SPACE, the volume still assigned); a write gets
 * NO_SPACE only when no volume has room (WriteCmd checks what landed).
 */
class DrainUnderWritesCmd implements Cmd {
  constructor (readonly volume: number, readonly steps: number, readonly writes: WriteCmd[]) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const drain = r.pool.drain(r.vols[this.volume]).then(() => undefined, (err: unknown) => err)
    for (let i = 0; i < this.steps; i++) await new Promise(resolve => setImmediate(resolve))
    for (const w of this.writes) await w.run(m, r)
    const err = await drain
    if (err === undefined) {
      r.stats.drains++ // writes after it may have taken the volume back (growth): checkPlacement
    } else if (isLogdiskError(err, 'NO_SPACE')) {
      r.stats.noSpace++
      if (/writes needed its room/.test((err as Error).message)) {
        r.stats.yielded++
        const v = r.pool.status().volumes.find(s => s.dir === r.vols[this.volume])
        if (v?.state !== 'assigned') throw new Error(`${this}: the drain gave way to writes, but the volume is ${v?.state}, not assigned`)
      }
    } else if (!isLogdiskError(err, 'NOT_FOUND')) {
      throw err
    }
    checkPlacement(String(this), r)
  }

  toString (): string { return `drainUnderWrites(V${this.volume}, ${this.steps}, [${this.writes.join(', ')}])` }
}

/** Sets a volume's capacity (in segments); adds it back if it was removed; assigns it. */
class CapacityCmd implements Cmd {
  constructor (readonly volume: number, readonly segments: number, readonly spare: boolean) {}
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> {
    r.pool.add(r.vols[this.volume], this.segments * SEGMENT, this.spare)
  }

  toString (): string { return `capacity(V${this.volume}, ${this.segments}${this.spare ? ', spare' : ''})` }
}

/** The daemon's periodic work: grow on pool.growAt, drain the emptiest under pool.shrinkAt. */
class TickCmd implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> {
    const before = r.pool.status().volumes.filter(v => v.state === 'assigned').length
    try {
      await r.pool.tick()
    } catch (err) {
      if (isLogdiskError(err, 'NO_SPACE')) { r.stats.noSpace++; return }
      throw err
    }
    if (r.pool.status().volumes.filter(v => v.state === 'assigned').length > before) r.stats.grew++
    checkPlacement(String(this), r)
  }

  toString (): string { return 'tick()' }
}

class ReopenCmd implements Cmd {
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    await r.store.close()
    Object.assign(r, await open(r))
    await checkExact(String(this), m, r)
    markDurable(m)
    checkPlacement(String(this), r)
  }

  toString (): string { return 'reopen()' }
}

/** kill -9: the page cache keeps every completed write. */
class KillCmd implements Cmd {
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    await r.store.abandon()
    Object.assign(r, await open(r))
    await checkExact(String(this), m, r)
    checkPlacement(String(this), r)
  }

  toString (): string { return 'kill9()' }
}

/** Power loss: unsynced bytes and directory entries may be lost (SimFileLayer.crash). */
class CrashCmd implements Cmd {
  constructor (readonly seed: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    await r.store.abandon()
    r.sim.crash(new Rng(this.seed))
    r.stats.crashes++
    Object.assign(r, await open(r))
    await checkAfterCrash(String(this), m, r)
    checkPlacement(String(this), r)
  }

  toString (): string { return `crash(${this.seed})` }
}

/** Power loss while a volume is being drained, after `steps` turns of the event loop. */
class CrashInDrainCmd implements Cmd {
  constructor (readonly volume: number, readonly steps: number, readonly seed: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    if (segmentsOn(r, this.volume).length === 0) return // nothing to move: an ordinary crash
    const drain = r.pool.drain(r.vols[this.volume]).then(() => undefined, (err: unknown) => err)
    for (let i = 0; i < this.steps; i++) await new Promise(resolve => setImmediate(resolve))
    r.sim.freeze()
    await drain
    await r.store.abandon()
    r.sim.crash(new Rng(this.seed))
    r.stats.midDrainCrashes++
    Object.assign(r, await open(r))
    await checkAfterCrash(String(this), m, r)
    checkPlacement(String(this), r)
  }

  toString (): string { return `crashInDrain(V${this.volume}, ${this.steps}, ${this.seed})` }
}

/**
 * mirror=2 (F10): rm -rf of one volume loses nothing. First `pool repair` (a crash in the
 * middle of making a segment leaves it with one copy until then) and flush; then the volume's
 * directory goes, the store reopens, and every block must read back from the other copies.
 * Then the directory is added again and repaired.
 */
class LoseVolumeCmd implements Cmd {
  constructor (readonly volume: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    if (r.mirror < 2 || segmentsOn(r, this.volume).length === 0) return
    try {
      const { made, unplaced } = await r.store.repairCopies(2, (id, exclude) => r.pool.placeCopy(id, exclude))
      r.stats.repaired += made
      // A segment no volume had room to copy (repair names it and goes on: 3da0a76) may have
      // its only copy here: losing the volume now would lose data the store never held twice.
      if (unplaced.length > 0) { r.stats.noSpace++; return }
    } catch (err) {
      if (isLogdiskError(err, 'NO_SPACE')) { r.stats.noSpace++; return }
      throw err
    }
    await r.store.close()
    markDurable(m)
    for (const f of r.sim.files()) if (f.startsWith(r.vols[this.volume] + path.sep)) await r.sim.remove(f)
    fs.rmSync(r.vols[this.volume], { recursive: true, force: true })
    r.stats.lost++
    Object.assign(r, await open(r))
    await checkExact(`${this} (reads from the other copies)`, m, r)
    r.pool.add(r.vols[this.volume], r.capacity * SEGMENT)
    await repairAll(r)
    await checkExact(`${this} (after repair)`, m, r)
  }

  toString (): string { return `lose(V${this.volume})` }
}

/**
 * pool repair; when the pool has no room for the copies (or for the new current segment's
 * two copies: repair seals the current one first), a volume is added and it runs again.
 *
 * No room for a segment's missing copy is not thrown: repair makes the copies it can and
 * names the rest (`unplaced`, since 3da0a76, helper-64's D6), whose records still name the
 * lost volume, file gone. This took only a thrown NO_SPACE as "no room" and returned with
 * such a segment unrepaired: lose(V1) re-added V1 with fewer segments of room than it had
 * (capacity(V1, 5) before), and checkPlacement after the next command found segment 4
 * "recorded on V1 but its file is not there" (seed 0x9001; the case named below). A test
 * mistake, not the store's: `pool repair` says so (exit 1, add a volume and repair again).
 */
async function repairAll (r: Real): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    let unplaced: number[] = []
    try {
      const result = await r.store.repairCopies(2, (id, exclude) => r.pool.placeCopy(id, exclude))
      r.stats.repaired += result.made
      if (result.unplaced.length === 0) return
      unplaced = result.unplaced
    } catch (err) {
      if (!isLogdiskError(err, 'NO_SPACE') || attempt === 2) throw err
    }
    if (attempt === 2) throw new Error(`pool repair found no room for the missing copies of segment(s) ${unplaced.join(', ')}, with ${attempt} volume(s) added`)
    r.stats.noSpace++
    const extra = path.join(path.dirname(r.dir), `extra${r.vols.length}`)
    r.vols.push(extra) // placement checks know it; commands keep to the first VOLUMES
    r.pool.add(extra, 16 * SEGMENT)
  }
}

const volumeArb = fc.integer({ min: 0, max: VOLUMES - 1 })
const writeArb = fc.tuple(
  fc.oneof(fc.integer({ min: 0, max: BLOCKS - 1 }), fc.integer({ min: 0, max: 63 })), // anywhere, or a hot spot
  fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 300 })),
  fc.integer({ min: 0, max: 0xffffffff })
).map(([b, n, f]) => new WriteCmd(b, n, f))

const commands = fc.commands([
  writeArb, writeArb, writeArb, writeArb,
  fc.tuple(fc.integer({ min: 0, max: BLOCKS - 1 }), fc.integer({ min: 1, max: 300 })).map(([b, n]) => new ReadCmd(b, n)),
  fc.constant(new FlushCmd()),
  volumeArb.map(v => new DrainCmd(v)),
  fc.tuple(volumeArb, fc.integer({ min: 0, max: 30 }), fc.array(writeArb, { minLength: 1, maxLength: 6 })).map(([v, n, ws]) => new DrainUnderWritesCmd(v, n, ws)),
  fc.tuple(volumeArb, fc.integer({ min: 1, max: 6 }), fc.boolean()).map(([v, n, s]) => new CapacityCmd(v, n, s)),
  fc.constant(new TickCmd()),
  fc.constant(new ReopenCmd()),
  fc.constant(new KillCmd()),
  fc.integer({ min: 0, max: 0xffffffff }).map(s => new CrashCmd(s)),
  fc.integer({ min: 0, max: 0xffffffff }).map(s => new CrashCmd(s)),
  fc.tuple(volumeArb, fc.integer({ min: 0, max: 60 }), fc.integer({ min: 0, max: 0xffffffff })).map(([v, n, s]) => new CrashInDrainCmd(v, n, s)),
  volumeArb.map(v => new LoseVolumeCmd(v)),
  volumeArb.map(v => new LoseVolumeCmd(v))
], { maxCommands: 50, size: '+1' })

const newStats = (): Stats => ({ drains: 0, moved: 0, grew: 0, noSpace: 0, crashes: 0, midDrainCrashes: 0, mirrored: 0, lost: 0, repaired: 0, yielded: 0 })

/** One run: a store on VOLUMES volumes of `capacity` segments each, the commands, then the final checks. */
async function scenario (cmds: Iterable<Cmd>, mirror: number, capacity: number, stats: Stats): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-pool-model-'))
  const sim = new SimFileLayer()
  const real = { dir: path.join(root, 'store'), vols: [...Array(VOLUMES).keys()].map(i => path.join(root, `V${i}`)), sim, stats, mirror, capacity } as Real
  try {
    await Store.create(real.dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
    fs.mkdirSync(path.join(real.dir, 'segments')) // made in the simulated disk; the pool looks at the real one
    writePolicy(real.dir, { ...defaultPolicy(), mirror, 'history.keep': '0' })
    if (mirror === 2) stats.mirrored++
    Object.assign(real, guardPlace(await openStore(real.dir, { fileLayer: sim, checkpointIntervalMs: 0 }, real.vols)))
    // Every volume: `capacity` segments; those not yet holding the first segment stay spare.
    for (const v of real.vols) real.pool.add(v, capacity * SEGMENT, true)
    const model: Model = { cur: Buffer.alloc(SIZE), durable: Buffer.alloc(SIZE), since: new Map() }
    await fc.asyncModelRun(() => ({ model, real }), cmds)
    await checkExact('at the end', model, real)
    // A power loss in the middle of making a mirrored segment can leave one copy unusable:
    // verify reports it and pool repair restores it; after that, verify must be clean.
    if (mirror === 2) await repairAll(real)
    const report = await real.store.verify()
    if (!report.ok) throw new Error(`verify: ${report.problems.join('; ')}`)
    await real.store.close()
    Object.assign(real, await open(real))
    await checkExact('after the last reopen', model, real)
  } finally {
    await real.store?.close().catch(() => undefined)
    fs.rmSync(root, { recursive: true, force: true })
  }
}

t.test('mirrored copies that a power loss left different are made to match before the next append', async t => {
  // The property below found this (seed 0x9001): copy A kept more unsynced appends than copy B;
  // recovery read A, appends went on at A's tail, leaving a hole in B; losing A lost them.
  const stats = newStats()
  await scenario([new WriteCmd(0, 271, 0), new LoseVolumeCmd(0), new WriteCmd(0, 58, 0), new WriteCmd(0, 213, 1), new CrashCmd(1121844277), new LoseVolumeCmd(2)], 2, 3, stats)
  t.equal(stats.lost, 2, 'two volumes were lost, one after the power loss, and nothing with them')
})

t.test('a segment made ahead on a volume that a drain then releases does not come back there after a power loss', async t => {
  // The property below found this (seed 0x9001, 150 runs): a write grew the pool onto V0 and
  // made segment 4 ahead there; a drain of V0 removed it (not synced) and released V0 to
  // spare; power failed; the removal was undone and recovery took the empty segment back as
  // the store's current one, on a spare volume another store could take.
  const stats = newStats()
  const W = (b: number, n: number, f: number): WriteCmd => new WriteCmd(b, n, f)
  await scenario([new LoseVolumeCmd(0), new KillCmd(), new DrainUnderWritesCmd(0, 0, [W(0, 148, 0), W(0, 4, 0), W(0, 5, 0), W(0, 242, 0)]), new DrainCmd(0), W(0, 2, 0), new DrainCmd(0), new CrashInDrainCmd(1, 0, 1994564626)], 2, 4, stats)
  t.equal(stats.midDrainCrashes, 1, 'power failed in the second drain; no volume holds a segment it is not assigned')
})

t.test('a segment pool repair found no room for gets its copy once a volume is added', async t => {
  // The property below found this (seed 0x9001) on a loaded machine: lose(V1) re-added V1 with
  // room for 3 segments (it had 5), so repair had no room for the copy of segment 4 it lost
  // and named it unplaced (not thrown); the model took repair as done, and after the power
  // loss segment 4 was still recorded on V1, its file gone. A test mistake (repairAll), not
  // the store's: repairAll now adds a volume and repairs again, as `pool repair` tells users.
  const stats = newStats()
  const W = (b: number, n: number, f: number): WriteCmd => new WriteCmd(b, n, f)
  await scenario([new DrainUnderWritesCmd(1, 0, [W(0, 1, 0), W(0, 157, 0), W(0, 127, 0), W(0, 6, 0)]), W(0, 261, 0), new DrainUnderWritesCmd(0, 0, [W(0, 47, 0)]), new CapacityCmd(1, 5, false), new LoseVolumeCmd(2), W(0, 270, 0), new DrainUnderWritesCmd(2, 0, [W(0, 1, 0), W(0, 69, 0), W(42, 127, 4099825253)]), new LoseVolumeCmd(1), new CrashCmd(3709858191)], 2, 3, stats)
  t.equal(stats.lost, 2, 'two volumes were lost')
  t.ok(stats.noSpace > 0, 'a repair found no room and a volume was added')
})

t.test('every block reads back what was last written, whatever the pool does and however it stops', async t => {
  t.comment(`seed ${SEED}, ${NUM_RUNS} runs (rerun with POOL_MODEL_SEED=${SEED})`)
  const stats = newStats()
  let runs = 0
  await fc.assert(fc.asyncProperty(commands, fc.constantFrom(1, 2), fc.integer({ min: 2, max: 4 }), async (cmds, mirror, capacity) => {
    await scenario(cmds, mirror, capacity, stats)
    runs++
  }), {
    seed: SEED,
    numRuns: NUM_RUNS,
    timeout: 30_000, // per run: a hang fails with its commands
    interruptAfterTimeLimit: 600_000, // shrinking is slow: report what it has by then (40 runs took 330 s on a loaded 2-core machine)
    markInterruptAsFailure: true
  })
  t.comment(`${runs} runs: ${stats.mirrored} mirrored, ${stats.drains} drains moving ${stats.moved} segments, ${stats.grew} growths by tick, ${stats.noSpace} NO_SPACE, ${stats.crashes} power losses, ${stats.midDrainCrashes} in a drain, ${stats.lost} volumes lost, ${stats.repaired} copies repaired, ${stats.yielded} drains gave way to writes`)
  t.equal(runs, NUM_RUNS, 'every run passed')
  t.ok(stats.moved > 0, 'drains moved segments')
  t.ok(stats.midDrainCrashes > 0, 'power failed in the middle of drains')
  t.ok(stats.crashes > 0, 'power failed')
  t.ok(stats.lost > 0, 'mirrored volumes were lost')
})
