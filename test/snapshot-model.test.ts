import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { LogdiskError } from '../src/errors'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'

/**
 * Model-based test of snapshots (fast-check): random unaligned writes, snapshots, deletes,
 * flushes, close + reopen, kill + reopen and index rebuilds against a model that keeps a
 * Buffer of the volume and one of every live snapshot. Rerun a failure with
 * MODEL_SEED=<the printed seed> (and MODEL_PATH=<the printed path> to replay just it).
 */
const SEED = Number(process.env.MODEL_SEED ?? 0x51a95)
const RUNS = Number(process.env.MODEL_RUNS ?? 15)
const B = 4096
const SIZE = 2 * 1024 * 1024
const SEGMENT = 1114112 // 1 MiB + 64 KiB: 270 blocks a segment, so segments roll every few writes
const MAX_WRITE = 256 * 1024

interface Model {
  current: Buffer
  snaps: Map<string, Buffer>
  next: number
}

interface Real {
  dir: string
  store: Store
  open: OpenOptions
}

type Cmd = fc.AsyncCommand<Model, Real>

function differs (got: Buffer, want: Buffer): string | undefined {
  if (got.length !== want.length) return `length ${got.length}, want ${want.length}`
  const at = got.findIndex((v, i) => v !== want[i])
  return at === -1 ? undefined : `first difference at byte ${at} (block ${Math.floor(at / B)}): got ${got[at]}, want ${want[at]}`
}

function expectSame (got: Buffer, want: Buffer, what: string): void {
  const d = differs(got, want)
  if (d) throw new Error(`${what}: ${d}`)
}

/** Full-image compare of current and every live snapshot, and of the snapshot list. */
async function checkAll (m: Model, r: Real, when: string): Promise<void> {
  const names = r.store.snapshots().map(s => s.name)
  const want = [...m.snaps.keys()]
  if (JSON.stringify(names) !== JSON.stringify(want)) throw new Error(`${when}: snapshots ${JSON.stringify(names)}, want ${JSON.stringify(want)}`)
  expectSame(await r.store.read(0, SIZE), m.current, `${when}: current`)
  for (const [name, image] of m.snaps) expectSame(await r.store.readSnapshot(name, 0, SIZE), image, `${when}: snapshot ${name}`)
}

class Write implements Cmd {
  constructor (readonly offset: number, readonly length: number, readonly seed: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const length = Math.min(this.length, SIZE - this.offset)
    const data = new Rng(this.seed).bytes(length)
    await r.store.write(this.offset, data)
    data.copy(m.current, this.offset)
    // Around the write: current has it, no snapshot does.
    const from = Math.max(0, Math.floor(this.offset / B) * B - B)
    const to = Math.min(SIZE, Math.ceil((this.offset + length) / B) * B + B)
    expectSame(await r.store.read(from, to - from), m.current.subarray(from, to), `current after ${this}`)
    for (const [name, image] of m.snaps) expectSame(await r.store.readSnapshot(name, from, to - from), image.subarray(from, to), `snapshot ${name} after ${this}`)
  }
  toString (): string { return `write(${this.offset}, ${Math.min(this.length, SIZE - this.offset)})` }
}

/** A write that runs past the end: refused with OUT_OF_RANGE, and nothing changes. */
class WritePastEnd implements Cmd {
  constructor (readonly back: number, readonly length: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const offset = SIZE - this.back
    let code: string | undefined
    try {
      await r.store.write(offset, Buffer.alloc(this.back + this.length, 0xee))
    } catch (err) {
      code = err instanceof LogdiskError ? err.code : String(err)
    }
    if (code !== 'OUT_OF_RANGE') throw new Error(`${this}: got ${code ?? 'success'}, want OUT_OF_RANGE`)
    expectSame(await r.store.read(SIZE - 2 * B, 2 * B), m.current.subarray(SIZE - 2 * B), `the end of current after ${this}`)
  }
  toString (): string { return `writePastEnd(${SIZE - this.back}, ${this.back + this.length})` }
}

class Snapshot implements Cmd {
  constructor (readonly frozen: boolean) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const name = `s${m.next++}`
    const record = await r.store.snapshot({ name, frozen: this.frozen })
    if (record.name !== name || record.frozen !== this.frozen) throw new Error(`snapshot returned ${JSON.stringify(record)}`)
    m.snaps.set(name, Buffer.from(m.current))
    expectSame(await r.store.readSnapshot(name, 0, SIZE), m.current, `new snapshot ${name}`)
  }
  toString (): string { return `snapshot(frozen=${this.frozen})` }
}

class Delete implements Cmd {
  constructor (readonly pick: number) {}
  check (m: Readonly<Model>): boolean { return m.snaps.size > 0 }
  async run (m: Model, r: Real): Promise<void> {
    const names = [...m.snaps.keys()]
    const name = names[this.pick % names.length]
    await r.store.deleteSnapshot(name)
    m.snaps.delete(name)
    let code: string | undefined
    try { await r.store.readSnapshot(name, 0, B) } catch (err) { code = (err as LogdiskError).code }
    if (code !== 'NOT_FOUND') throw new Error(`reading deleted ${name}: got ${code ?? 'data'}, want NOT_FOUND`)
    if (r.store.snapshots().some(s => s.name === name)) throw new Error(`${name} is still listed`)
  }
  toString (): string { return `delete(#${this.pick})` }
}

class Flush implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> { await r.store.flush() }
  toString (): string { return 'flush' }
}

class Reopen implements Cmd {
  constructor (readonly how: 'close' | 'kill' | 'rebuild') {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const storeDir = path.join(r.dir, 'store')
    if (this.how === 'kill') {
      // The process dies (no final checkpoint); the OS keeps every completed write.
      await r.store.abandon()
    } else {
      await r.store.close()
      if (this.how === 'rebuild') fs.rmSync(path.join(storeDir, 'index'), { recursive: true, force: true })
    }
    r.store = await Store.open(storeDir, r.open)
    await checkAll(m, r, `after ${this}`)
  }
  toString (): string { return `reopen(${this.how})` }
}

// Unaligned and block-aligned offsets and lengths: each edge of a write is inside a block or on
// a boundary, so every read-modify-write case comes up.
const writeOffset = fc.oneof(
  fc.nat(SIZE - 1),
  fc.nat(SIZE / B - 1).map(b => b * B),
  fc.tuple(fc.nat(SIZE / B - 1), fc.integer({ min: -16, max: 16 })).map(([b, d]) => Math.max(0, b * B + d))
)
const writeLength = fc.oneof(
  fc.integer({ min: 1, max: 64 }),
  fc.integer({ min: 1, max: 3 * B }),
  fc.integer({ min: 1, max: MAX_WRITE / B }).map(n => n * B),
  fc.integer({ min: 1, max: MAX_WRITE })
)
const write = fc.tuple(writeOffset, writeLength, fc.nat()).map(([o, l, s]) => new Write(o, l, s))
const commands = [
  write,
  write,
  write,
  write,
  fc.tuple(fc.integer({ min: 0, max: B }), fc.integer({ min: 1, max: B })).map(([b, l]) => new WritePastEnd(b, l)),
  fc.boolean().map(f => new Snapshot(f)),
  fc.boolean().map(f => new Snapshot(f)),
  fc.nat().map(p => new Delete(p)),
  fc.constant(new Flush()),
  fc.constantFrom<'close' | 'kill' | 'rebuild'>('close', 'kill', 'rebuild').map(h => new Reopen(h))
]

t.test('snapshots and current behave like the model', async t => {
  t.comment(`MODEL_SEED=${SEED} (${RUNS} runs)`)
  let runs = 0
  let steps = 0
  const property = fc.asyncProperty(
    fc.commands(commands, { maxCommands: 40, size: '+1' }),
    fc.constantFrom(64, 65536), // checkpoint every 64 blocks, or only when a read or close needs the index
    async (cmds, checkpointMaxBlocks) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-model-'))
      const open: OpenOptions = { checkpointIntervalMs: 0, checkpointMaxBlocks }
      const real: Real = { dir, store: undefined as unknown as Store, open }
      runs++
      try {
        await Store.create(path.join(dir, 'store'), { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
        real.store = await Store.open(path.join(dir, 'store'), open)
        const model: Model = { current: Buffer.alloc(SIZE), snaps: new Map(), next: 1 }
        await fc.asyncModelRun(() => ({ model, real }), cmds)
        steps += [...cmds].length
        await checkAll(model, real, 'at the end of the run')
        await new Reopen('close').run(model, real)
        const report = await real.store.verify()
        if (!report.ok) throw new Error(`verify: ${report.problems.join('; ')}`)
      } finally {
        await real.store?.close().catch(() => undefined)
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  )
  const details = await fc.check(property, {
    seed: SEED,
    numRuns: RUNS,
    path: process.env.MODEL_PATH,
    endOnFailure: process.env.MODEL_SHRINK === undefined // shrinking reruns stores: opt in
  })
  if (details.failed) {
    t.fail(`model mismatch: ${(details.errorInstance as Error | undefined)?.message ?? 'the property failed'}`)
    t.comment(fc.defaultReportMessage(details) ?? '')
    t.comment(`replay: MODEL_SEED=${SEED} MODEL_PATH=${JSON.stringify(details.counterexamplePath)} (add MODEL_SHRINK=1 to shrink)`)
  } else {
    t.pass(`${details.numRuns} runs, ${steps} commands: every snapshot and current matched the model`)
    t.equal(runs, details.numRuns, 'the property ran once a run')
  }
})
