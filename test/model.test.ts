import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

/**
 * Model-based test: random sequences of writes, reads, flushes, checkpoints and reopens run
 * against a real Store on the real filesystem and against a plain Buffer; every read must
 * agree byte for byte. Rerun a failure with MODEL_SEED=<the printed seed> (fast-check also
 * prints the shrunk counterexample and its path).
 */
const SEED = Number(process.env.MODEL_SEED ?? 0x6d0de1)
const NUM_RUNS = Number(process.env.MODEL_RUNS ?? 75)
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024 // the smallest round size that fits a 256-block entry

interface Model { bytes: Buffer }
interface Real { dir: string, store: Store }
type Cmd = fc.AsyncCommand<Model, Real>

const openStore = (dir: string): Promise<Store> => Store.open(dir, { checkpointIntervalMs: 0 })

/** Deterministic content for a write, so a counterexample prints as (offset, length, fill). */
function pattern (length: number, fill: number): Buffer {
  return new Rng(fill).bytes(length)
}

class WriteCmd implements Cmd {
  constructor (readonly offset: number, readonly length: number, readonly fill: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const data = pattern(this.length, this.fill)
    if (this.offset + this.length > SIZE) {
      const err = await r.store.write(this.offset, data).then(() => undefined, (e: unknown) => e)
      if ((err as { code?: string } | undefined)?.code !== 'OUT_OF_RANGE') {
        throw new Error(`${this}: expected OUT_OF_RANGE, got ${err === undefined ? 'success' : String(err)}`)
      }
      return // and nothing changed: later reads check that
    }
    await r.store.write(this.offset, data)
    data.copy(m.bytes, this.offset)
  }

  toString (): string { return `write(${this.offset}, ${this.length}, ${this.fill})` }
}

class ReadCmd implements Cmd {
  constructor (readonly offset: number, readonly length: number) {}
  check (): boolean { return true }
  async run (m: Model, r: Real): Promise<void> {
    const got = await r.store.read(this.offset, this.length)
    const want = m.bytes.subarray(Math.min(this.offset, SIZE), Math.min(this.offset + this.length, SIZE))
    if (got.length !== want.length) throw new Error(`${this}: got ${got.length} bytes, expected ${want.length}`)
    if (!got.equals(want)) {
      let i = 0
      while (got[i] === want[i]) i++
      throw new Error(`${this}: first difference at volume byte ${this.offset + i} (block ${Math.floor((this.offset + i) / B)}): got ${got[i]}, expected ${want[i]}`)
    }
  }

  toString (): string { return `read(${this.offset}, ${this.length})` }
}

class FlushCmd implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> { await r.store.flush() }
  toString (): string { return 'flush()' }
}

class CheckpointCmd implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> { await r.store.checkpoint() }
  toString (): string { return 'checkpoint()' }
}

/** close() then open(): a clean restart. */
class ReopenCmd implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> {
    await r.store.close()
    r.store = await openStore(r.dir)
    if (r.store.recovery.cut) throw new Error(`${this}: a clean reopen cut the log: ${JSON.stringify(r.store.recovery.cut)}`)
  }

  toString (): string { return 'reopen()' }
}

/**
 * abandon() then open(): a kill -9. On the real filesystem the page cache keeps every
 * completed write, so nothing may be lost; recovery replays what the index had not caught up on.
 */
class KillCmd implements Cmd {
  check (): boolean { return true }
  async run (_m: Model, r: Real): Promise<void> {
    await r.store.abandon()
    r.store = await openStore(r.dir)
    if (r.store.recovery.cut) throw new Error(`${this}: recovery after kill -9 cut the log: ${JSON.stringify(r.store.recovery.cut)}`)
  }

  toString (): string { return 'kill9()' }
}

const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: SIZE - 1 }),
  fc.integer({ min: 0, max: SIZE / B - 1 }).map(b => b * B),
  fc.integer({ min: SIZE - 3 * B, max: SIZE + B }) // near and past the end
)
const lengthArb = fc.oneof(
  fc.integer({ min: 1, max: 2 * B }),
  fc.constantFrom(B, 2 * B, 64 * B),
  fc.integer({ min: 1, max: 300 * 1024 }),
  fc.integer({ min: 100 * 1024, max: 300 * 1024 })
)

const commands = fc.commands([
  fc.tuple(offsetArb, lengthArb, fc.integer({ min: 0, max: 0xffffffff })).map(([o, l, f]) => new WriteCmd(o, l, f)),
  fc.tuple(offsetArb, lengthArb, fc.integer({ min: 0, max: 0xffffffff })).map(([o, l, f]) => new WriteCmd(o, l, f)),
  fc.tuple(offsetArb, lengthArb).map(([o, l]) => new ReadCmd(o, l)),
  fc.constant(new FlushCmd()),
  fc.constant(new CheckpointCmd()),
  fc.constant(new ReopenCmd()),
  fc.constant(new KillCmd())
], { maxCommands: 60, size: '+1' })

t.test('the store behaves like a Buffer', async t => {
  t.comment(`seed ${SEED}, ${NUM_RUNS} runs (rerun with MODEL_SEED=${SEED})`)
  const stats = { runs: 0, rolled: 0 }
  await fc.assert(fc.asyncProperty(commands, async cmds => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-model-'))
    const real: Real = { dir, store: undefined as unknown as Store }
    try {
      await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
      real.store = await openStore(dir)
      const model: Model = { bytes: Buffer.alloc(SIZE) }
      await fc.asyncModelRun(() => ({ model, real }), cmds)
      const all = await real.store.read(0, SIZE + B)
      if (!all.equals(model.bytes)) throw new Error('the whole volume differs from the model at the end')
      const report = await real.store.verify()
      if (!report.ok) throw new Error(`verify: ${report.problems.join('; ')}`)
      stats.runs++
      if (real.store.status().segments.active > 0) stats.rolled++
    } finally {
      await real.store?.close().catch(() => undefined)
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }), { seed: SEED, numRuns: NUM_RUNS })
  t.comment(`${stats.runs} runs passed, ${stats.rolled} of them rolled segments`)
  t.ok(stats.rolled > 0, 'some runs rolled segments')
})
