// helper-75's D4: two mirrored volumes, then `policy set mirror=1`: `pool remove` of one of
// them was refused ("every other pool volume with room already holds a copy of segment 0 ...;
// add a volume first"): a drain only moved copies, never dropped one beyond what mirror asks,
// so going from two mirrored volumes to one needed a third volume (a full copy of everything).
// A drain now drops such a copy (the index stops naming it first, then the file goes) and
// moves only a segment that has too few copies elsewhere.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { defaultPolicy, writePolicy } from '../src/policy/policy'
import { segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import type { Pool } from '../src/pool/pool'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

const B = 4096
const MiB = 1024 * 1024
const SIZE = 16 * MiB
const SEG = MiB + 64 * 1024

/** A store on the simulated disk, mirror=2 on pool volumes A and B (real directories, 32 segments each). */
async function mirroredOnTwo (t: { teardown: (fn: () => unknown) => void }, name: string): Promise<{ dir: string, A: string, V: string, sim: SimFileLayer, store: Store, pool: Pool }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  const A = path.join(root, 'A')
  const V = path.join(root, 'B')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim)
  fs.mkdirSync(path.join(dir, 'segments'))
  writePolicy(dir, { ...defaultPolicy(), 'history.keep': '0', mirror: 2 })
  const { store, pool } = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 }, [A, V])
  t.teardown(() => store.close().catch(() => undefined))
  pool.add(A, 32 * SEG)
  pool.add(V, 32 * SEG)
  return { dir, A, V, sim, store, pool }
}

t.test('mirror lowered to 1: a drain of one of two mirrored volumes drops its copies and moves only what has no other', async t => {
  const policy = { ...defaultPolicy(), 'history.keep': '0', mirror: 2 }
  const rig = await mirroredOnTwo(t, 'drain-surplus')
  const { dir, A, V, sim } = rig
  let { store, pool } = rig
  const id = (d: string): string => pool.status().volumes.find(v => v.dir === d)!.id
  const model = Buffer.alloc(SIZE)
  const write = async (at: number, seed: number): Promise<void> => {
    const data = new Rng(seed).bytes(MiB)
    await store.write(at, data)
    data.copy(model, at)
  }
  for (let i = 0; i < 3; i++) await write(i * MiB, i)
  const mirrored = [...store.segmentPlacement()].filter(([, vs]) => vs.length === 2).map(([s]) => s)
  t.ok(mirrored.length >= 2, `segments with a copy on A and on B: ${mirrored.join(', ')}`)

  writePolicy(dir, { ...policy, mirror: 1 })
  pool.setPolicy({ ...policy, mirror: 1 })
  await store.flush()
  for (let i = 3; i < 5; i++) await write(i * MiB, i) // new segments: one copy, on A
  const onlyA = [...store.segmentPlacement()].filter(([, vs]) => vs.length === 1 && vs[0] === id(A)).map(([s]) => s)
  t.ok(onlyA.length >= 1, `segments with their only copy on A: ${onlyA.join(', ')}`)
  const moved: number[] = []
  const relocate = store.relocateSegment.bind(store)
  store.relocateSegment = async (s, from, to) => { moved.push(s); return await relocate(s, from, to) }

  const err = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.equal(err, undefined, `the drain of A finishes: ${(err as Error)?.message ?? ''}`)
  t.same(sim.files().filter(f => f.startsWith(A + path.sep)), [], 'nothing of the store is left on A')
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'spare', 'A is released')
  for (const [s, vs] of store.segmentPlacement()) t.same(vs, [id(V)], `segment ${s} is on B alone`)
  t.same(moved.filter(s => mirrored.includes(s)), [], 'no segment B held a copy of was moved: their copies on A were dropped')
  t.ok(onlyA.every(s => moved.includes(s)), `the segments A alone held were moved (${moved.join(', ')})`)
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  const report = await store.verify({ copies: 1 })
  t.ok(report.ok, `verify is clean: ${report.problems.join('; ')}`)

  await store.close()
  ;({ store, pool } = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 }))
  t.ok((await store.read(0, SIZE)).equals(model), 'and after a reopen')
  t.ok((await store.verify({ copies: 1 })).ok, 'verify is clean after the reopen')
})

t.test('mirror still 2: a drain of one of two mirrored volumes is refused, nothing dropped', async t => {
  const { A, sim, store, pool } = await mirroredOnTwo(t, 'drain-surplus-kept')
  const data = new Rng(1).bytes(2 * MiB)
  await store.write(0, data)
  const err = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.match((err as Error)?.message, /already holds a copy of segment \d+ .*add a volume first/, 'refused: B holds the only other copy')
  const a = pool.status().volumes.find(v => v.dir === A)!.id
  for (const [s, vs] of store.segmentPlacement()) {
    t.equal(vs.length, 2, `segment ${s} keeps two copies`)
    t.ok(sim.files().includes(path.join(pool.dirOf(a), segmentFileName(s))), `and its file on A`)
  }
  t.ok((await store.read(0, data.length)).equals(data), 'the data reads back')
})
