// A pool drain racing the store's writes, at the library level with the interleaving fixed by
// hand: the drain's first move is held while writes fill every other volume.
//
// Found by test/pool.test.ts ("full pool ... a new volume lets writes continue"), once in
// about ten suites on a loaded machine: right after `pool add C`, the daemon's shrink tick
// drained the volume the pool had taken by itself (A) onto C while the test's writer went on;
// the writes filled C, the only volume with room left was A, excluded as drained, and the
// writer got ENOSPC in a pool with room. The drain now gives way (Pool.place), and reserves
// the room of each segment it moves before the move waits for its lock (Pool.drain).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { isLogdiskError } from '../src/errors'
import type { Pool } from '../src/pool/pool'
import { defaultPolicy, writePolicy } from '../src/policy/policy'
import { segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

const B = 4096
const MiB = 1024 * 1024
const SIZE = 16 * MiB
const SEG = MiB + 64 * 1024 // one 256-block entry fits, with its table and the reserve

/** A store on the simulated disk whose pool starts with `spares` (tmp directories A and C). */
async function setup (t: Test, name: string, spares: Array<'A' | 'C'>): Promise<{ dir: string, A: string, C: string, sim: SimFileLayer, store: Store, pool: Pool }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  const A = path.join(root, 'A')
  const C = path.join(root, 'C')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim)
  fs.mkdirSync(path.join(dir, 'segments')) // made in the simulated disk; the pool looks at the real one
  writePolicy(dir, { ...defaultPolicy(), 'history.keep': '0' })
  const { store, pool } = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 }, spares.map(v => v === 'A' ? A : C))
  t.teardown(() => store.close().catch(() => undefined))
  return { dir, A, C, sim, store, pool }
}

/** What the store should read: `write` writes seeded bytes through `store()` and into `model`. */
function modelled (store: () => Store): { model: Buffer, write: (offset: number, n: number, seed: number) => Promise<void> } {
  const model = Buffer.alloc(SIZE)
  return {
    model,
    write: async (offset, n, seed) => {
      const data = new Rng(seed).bytes(n)
      await store().write(offset, data)
      data.copy(model, offset)
    }
  }
}

t.test('writes that fill the other volumes during a drain go to the drained volume; the drain stops; nothing is overfilled', async t => {
  const s = await setup(t, 'drain-writes', ['A', 'C'])
  const { dir, A, C, sim } = s
  let { store, pool } = s
  pool.add(A, 5 * SEG)
  pool.add(C, 3 * SEG)
  const { model, write } = modelled(() => store)
  const volume = (dir: string) => pool.status().volumes.find(v => v.dir === dir)!
  const onA = (): number[] => [...store.segmentPlacement()].filter(([, vs]) => vs.includes(volume(A).id)).map(([id]) => id)

  for (let i = 0; i < 2; i++) await write(i * MiB, MiB, i)
  const before = onA()
  t.ok(before.length >= 2, `the first segments are on A (${before.join(', ')})`)
  t.equal(volume(C).segments, 0, 'C holds nothing yet')

  // The drain's first move waits until the writes below are done.
  const relocate = store.relocateSegment.bind(store)
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let entered!: () => void
  const held = new Promise<void>(resolve => { entered = resolve })
  store.relocateSegment = async (id, from, to) => { entered(); await gate; return await relocate(id, from, to) }
  const drain = pool.drain(A).then(() => undefined, (err: unknown) => err)
  await held

  // C has room for 3 segments, one reserved for the move held: its room for writes is 2.
  // Five more MiB need five segments: three of them can only go to A.
  for (let i = 2; i < 7; i++) await write(i * MiB, MiB, i)
  const after = onA().filter(id => !before.includes(id))
  t.ok(after.length > 0, `segments written during the drain went to A (${after.join(', ')})`)
  for (const v of pool.status().volumes.filter(v => !v.internal)) {
    t.ok(v.usedBytes <= v.capacityBytes, `${path.basename(v.dir)}: ${v.segments} segment(s) within its capacity (${v.usedBytes} <= ${v.capacityBytes} bytes)`)
  }

  release()
  const err = await drain
  t.ok(isLogdiskError(err, 'NO_SPACE'), `the drain stops with NO_SPACE: ${(err as Error)?.message}`)
  t.match((err as Error).message, /cannot drain .*A: the store's writes needed its room for segment \d+ .*it stays assigned, 1 segment\(s\) moved/, 'and says why, in one line')
  t.equal(volume(A).state, 'assigned', 'A stays assigned to the store')
  for (const v of pool.status().volumes.filter(v => !v.internal)) {
    t.ok(v.usedBytes <= v.capacityBytes, `after the drain: ${path.basename(v.dir)} within its capacity (${v.segments} segment(s))`)
  }
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte written reads back')
  const report = await store.verify()
  t.ok(report.ok, `verify is clean: ${report.problems.join('; ')}`)

  await store.close()
  ;({ store, pool } = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 }))
  t.ok((await store.read(0, SIZE)).equals(model), 'and after a reopen')
  t.equal(volume(A).state, 'assigned', 'A is still assigned after the reopen')
})

t.test('a volume the pool took by itself and the user then adds is never given back by a shrink', async t => {
  // The flake above began with this: `create --pool A` lists A as a spare, the first segment
  // takes it (the pool's own growth), and `pool add A --capacity 8M` left it marked as taken
  // by the pool; after `pool add C`, the shrink tick drained A onto C.
  const { A, C, store, pool } = await setup(t, 'drain-added', ['A'])
  const data = new Rng(1).bytes(2 * MiB)
  await store.write(0, data)
  const volume = (dir: string) => pool.status().volumes.find(v => v.dir === dir)!
  t.equal(volume(A).state, 'assigned', 'the first segments took A')
  pool.add(A, 4 * SEG)
  pool.add(C, 16 * SEG)
  t.ok(pool.status().useFraction < defaultPolicy()['pool.shrinkAt'], `pool use ${pool.status().useFraction.toFixed(2)} is under pool.shrinkAt`)
  await pool.tick()
  t.equal(volume(A).state, 'assigned', 'A stays assigned after a tick')
  t.ok(volume(A).segments >= 2, `and keeps its segments (${volume(A).segments})`)
  t.equal(volume(C).segments, 0, 'nothing was moved to C')
  t.ok((await store.read(0, data.length)).equals(data), 'the data reads back')
})

/** Resolves once the segment made ahead of its roll (`id`) exists on the simulated disk. */
async function madeAhead (sim: SimFileLayer, id: number): Promise<void> {
  const name = segmentFileName(id)
  for (let i = 0; i < 1000 && !sim.files().some(f => path.basename(f) === name); i++) await new Promise(resolve => setTimeout(resolve, 2))
  if (!sim.files().some(f => path.basename(f) === name)) throw new Error(`segment ${id} was never made ahead`)
}

t.test('a drain syncs the directory of the volume before it releases it, and fails (the volume kept) when it cannot', async t => {
  // Found by test/pool-model.test.ts: a drain removed the segment made ahead on the volume
  // (without a sync, as rolls and closes do) and released it; a power loss undid the removal,
  // and the next open took the empty segment back as the current one, on a spare volume.
  const { A, C, sim, store, pool } = await setup(t, 'drain-sync', ['C', 'A'])
  pool.add(C, SEG) // segment 0 fills C; the one made ahead goes to A
  pool.add(A, 4 * SEG)
  const data = new Rng(3).bytes(640 * 1024) // over half a segment: segment 1 is made ahead
  await store.write(0, data)
  await madeAhead(sim, 1)
  t.ok(sim.files().some(f => f.startsWith(A + path.sep)), 'segment 1 was made ahead on A')
  sim.failNext('syncDir', 'EIO')
  const err = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.ok(isLogdiskError(err, 'IO'), `the drain fails: ${(err as Error)?.message}`)
  t.match((err as Error).message, new RegExp(`fsync ${A}/`), 'on the fsync of A\'s directory')
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'assigned', 'A stays assigned')
  t.equal(await pool.drain(A), 0, 'the next drain has nothing to move')
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'spare', 'and releases A')
  t.same(sim.files().filter(f => f.startsWith(A + path.sep)), [], 'with nothing of the store on it')
  await store.write(data.length, data) // rolls onto A, taken back from the spares
  t.ok((await store.read(0, 2 * data.length)).equals(Buffer.concat([data, data])), 'the writes go on and read back')
})

t.test('a drain beside a compaction that recycles the segment it is about to move: the drain goes on and finishes', async t => {
  // Found by a hostile test (helper-42): `pool remove` beside `compact` failed, 3 of 3, with
  // "segment N has no copy on volume ..." (NOT_FOUND): the drain listed the volume's segments,
  // and compaction recycled one before its move ran.
  const { A, C, store, pool } = await setup(t, 'drain-compact', ['A', 'C'])
  pool.add(A, 8 * SEG)
  const { model, write } = modelled(() => store)
  for (let i = 0; i < 3; i++) await write(i * MiB, MiB, 10 + i)
  pool.add(C, 16 * SEG)
  const volume = (dir: string) => pool.status().volumes.find(v => v.dir === dir)!
  const onA = [...store.segmentPlacement()].filter(([, vs]) => vs.includes(volume(A).id)).map(([id]) => id)
  t.ok(onA.length >= 2, `segments on A: ${onA.join(', ')}`)

  // The drain's first move is held while the data is written again and compacted away.
  const relocate = store.relocateSegment.bind(store)
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let entered!: () => void
  const held = new Promise<void>(resolve => { entered = resolve })
  let first = -1
  store.relocateSegment = async (id, from, to) => {
    if (first < 0) { first = id; entered(); await gate }
    return await relocate(id, from, to)
  }
  const drain = pool.drain(A).then(() => undefined, (err: unknown) => err)
  await held
  for (let i = 0; i < 3; i++) await write(i * MiB, MiB, 20 + i)
  await store.flush()
  await store.compact()
  t.notOk(store.logSegments().some(s => s.id === first), `compaction recycled segment ${first}, which the drain is about to move`)
  release()
  const err = await drain
  t.equal(err, undefined, `the drain finishes: ${(err as Error)?.message ?? ''}`)
  t.equal(volume(A).segments, 0, 'A holds no segment')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte written reads back')
  const report = await store.verify()
  t.ok(report.ok, `verify is clean: ${report.problems.join('; ')}`)
})

t.test('a segment copy that fails part way (its volume full) leaves no partial .copy file behind', async t => {
  // Found by a hostile test (helper-42): a drain onto a volume whose filesystem filled failed
  // as it should, but its 90 KiB seg-N.log.copy stayed for good.
  const { A, C, sim, store, pool } = await setup(t, 'drain-copy-fails', ['A', 'C'])
  pool.add(A, 8 * SEG)
  const data = new Rng(7).bytes(2 * MiB)
  await store.write(0, data)
  await store.flush()
  pool.add(C, 8 * SEG)
  sim.failNext('datasync', 'ENOSPC')
  const err = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.ok(err !== undefined, `the drain fails: ${(err as Error)?.message}`)
  t.same(sim.files().filter(f => f.startsWith(C + path.sep) && f.endsWith('.copy')), [], 'no .copy file on the target volume')
  t.ok((await store.read(0, data.length)).equals(data), 'the data reads back')
})

t.test('a drain whose only other volumes already hold a copy of each segment says so, not "no room"', async t => {
  // Found by a hostile test (helper-42): mirror=2 on two volumes, `pool remove` of one said
  // "no other pool volume has room" while the other had 64 MiB free.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-drain-copies-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  const A = path.join(root, 'A')
  const C = path.join(root, 'C')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  writePolicy(dir, { ...defaultPolicy(), mirror: 2 })
  const { store, pool } = await openStore(dir, { checkpointIntervalMs: 0 }, [A, C])
  t.teardown(() => store.close().catch(() => undefined))
  pool.add(A, 16 * SEG)
  pool.add(C, 16 * SEG)
  await store.write(0, new Rng(9).bytes(2 * MiB))
  await store.flush()
  const err = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.ok(isLogdiskError(err, 'NO_SPACE'), `refused: ${(err as Error)?.message}`)
  t.match((err as Error).message, /cannot drain .*A: every other pool volume with room already holds a copy of segment \d+ \(its copies must be on distinct volumes\); add a volume first/)
})
