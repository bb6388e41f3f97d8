// A drain whose old copies cannot be deleted (the store's directory on the volume immutable):
// its first step removes the segment made ahead of the next roll, and that removal failed
// without a word (next-segment.ts: best effort). Once the directory was writable again, the next
// drain removed every old copy but not that file: its id is past the current segment's, and the
// drain's last sweep (Placement.removeUnnamedOn) skipped such ids as a segment still being made.
// The volume was released and dropped from pool.json with an empty segment file of the store on
// it (helpers 75 and 79, CLI.md "Known defects"). Now the drain's sweep removes what the index
// does not name there at and past the current segment too (under the append lock, so no roll is
// making one meanwhile), and the made-ahead segment is made again on a volume that stays.
// A sibling (mirror lowered to 1): a drain that dropped a surplus copy and could not delete its
// file still counted it on the volume, and the next drain, the directory writable again, was
// refused with "every other pool volume with room already holds a copy" (helper-75's D5, fixed
// for moves but not for drops).
// Simulated parts: the disk (SimFileLayer, one directory made unwritable by failing its
// removals and creations with EPERM); real parts: the pool's directories and markers.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { fromSystemError } from '../src/errors'
import { defaultPolicy, writePolicy, type Policy } from '../src/policy/policy'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'

const B = 4096
const MiB = 1024 * 1024
const SIZE = 16 * MiB
const SEG = MiB + 64 * 1024

/** A SimFileLayer whose files under `locked` (when set) cannot be removed or created: chattr +i. */
class LockableLayer extends SimFileLayer {
  locked: string | undefined
  private refuse (file: string, what: string): void {
    if (this.locked !== undefined && path.normalize(file).startsWith(this.locked + path.sep)) {
      throw fromSystemError(Object.assign(new Error(`EPERM: operation not permitted, ${what} '${file}'`), { code: 'EPERM' }), `${what} ${file}`)
    }
  }

  override async remove (file: string): Promise<void> {
    this.refuse(file, 'remove')
    return await super.remove(file)
  }

  override async open (file: string, create: boolean): Promise<Awaited<ReturnType<SimFileLayer['open']>>> {
    if (create) this.refuse(file, 'open')
    return await super.open(file, create)
  }

  override async rename (from: string, to: string): Promise<void> {
    this.refuse(from, 'rename')
    this.refuse(to, 'rename')
    return await super.rename(from, to)
  }
}

async function onTwo (t: { teardown: (fn: () => unknown) => void }, name: string, mirror: number): Promise<{ dir: string, A: string, V: string, sim: LockableLayer, store: Store, pool: import('../src/pool/pool').Pool, policy: Policy }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  const A = path.join(root, 'A')
  const V = path.join(root, 'B')
  const sim = new LockableLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim)
  fs.mkdirSync(path.join(dir, 'segments'))
  const policy = { ...defaultPolicy(), 'history.keep': '0', mirror }
  writePolicy(dir, policy)
  const { store, pool } = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 }, [A, V])
  t.teardown(() => store.close().catch(() => undefined))
  pool.add(A, 32 * SEG)
  pool.add(V, 32 * SEG)
  return { dir, A, V, sim, store, pool, policy }
}

const filesUnder = (sim: SimFileLayer, dir: string): string[] => sim.files().filter(f => f.startsWith(dir + path.sep))
const segmentFiles = (sim: SimFileLayer, dir: string): string[] => filesUnder(sim, dir).filter(f => f.endsWith('.log')).map(f => path.basename(f))

t.test('a drain that could not remove the segment made ahead: the next drain leaves nothing of the store on the volume', async t => {
  const { dir, A, V, sim, store, pool } = await onTwo(t, 'leftover-ahead', 1)
  const volumeId = (d: string): string => pool.status().volumes.find(v => v.dir === d)!.id
  const model = Buffer.alloc(SIZE)
  const write = async (at: number, len: number, seed: number): Promise<void> => {
    const data = new Rng(seed).bytes(len)
    await store.write(at, data)
    data.copy(model, at)
  }
  // Two full segments and a current one past half: the next one is made ahead, on A (pool order).
  await write(0, 2 * MiB + 512 * 1024, 1)
  await store.flush()
  const current = Math.max(...store.segmentPlacement().keys())
  const own = pool.dirOf(volumeId(A))
  const ahead = current + 1 // made ahead at the roll into the current one (next-segment.ts)
  t.ok(segmentFiles(sim, own).length >= 2, `A holds the segments: ${segmentFiles(sim, own).join(' ')}`)

  sim.locked = own
  const failed = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.match((failed as Error)?.message, /not writable \(EPERM\)/, `the drain fails on the immutable directory: ${(failed as Error)?.message}`)
  t.ok(segmentFiles(sim, own).includes(`seg-${String(ahead).padStart(12, '0')}.log`), `the segment made ahead (${ahead}) is still on A: ${segmentFiles(sim, own).join(' ')}`)

  sim.locked = undefined
  const moved = await pool.drain(A).then(n => n, (e: unknown) => e)
  t.type(moved, 'number', `writable again, the drain finishes: ${(moved as Error)?.message ?? moved}`)
  t.same(segmentFiles(sim, own), [], 'no segment file of the store is left on the released volume')
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'spare', 'A is released')
  for (const [s, vs] of store.segmentPlacement()) t.same(vs, [volumeId(V)], `segment ${s} is on B`)

  // Writes go on: the next segments (the one made ahead among them) are made on B.
  await write(2 * MiB + 512 * 1024, 2 * MiB, 2)
  await store.flush()
  t.same(segmentFiles(sim, own), [], 'still nothing on A after the next rolls')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  t.ok((await store.verify({ copies: 1 })).ok, 'verify is clean')
  await store.close()
  const again = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  t.teardown(() => again.store.close().catch(() => undefined))
  t.ok((await again.store.read(0, SIZE)).equals(model), 'and after a reopen')
  t.same(segmentFiles(sim, own), [], 'nothing on A after the reopen')
})

t.test('writes roll between the failed drain and the next: the leftover at the current id goes too', async t => {
  const { A, V, sim, store, pool } = await onTwo(t, 'leftover-ahead-rolled', 1)
  const volumeId = (d: string): string => pool.status().volumes.find(v => v.dir === d)!.id
  const model = Buffer.alloc(SIZE)
  const write = async (at: number, len: number, seed: number): Promise<void> => {
    const data = new Rng(seed).bytes(len)
    await store.write(at, data)
    data.copy(model, at)
  }
  await write(0, 2 * MiB + 512 * 1024, 1)
  await store.flush()
  const own = pool.dirOf(volumeId(A))
  sim.locked = own
  const failed = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.ok(failed instanceof Error, 'the drain fails')
  const leftover = segmentFiles(sim, own).map(n => Number(n.slice(4, -4))).sort((a, b) => a - b).pop()!
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'assigned', 'A is still assigned after the failed drain')
  // The store rolls on before the directory is writable again, its new segments away from A (a
  // real immutable directory fails the pool's write probe: read-only; here A is made full).
  pool.add(A, 0)
  await write(2 * MiB + 512 * 1024, 1024 * 1024, 2)
  await store.flush()
  const current = Math.max(...store.segmentPlacement().keys())
  t.equal(current, leftover, `the store rolled to segment ${current}, the leftover's id, made again on B`)
  t.same(store.volumesOf(current), [volumeId(V)], 'the index names B alone for it')

  sim.locked = undefined
  const moved = await pool.drain(A).then(n => n, (e: unknown) => e)
  t.type(moved, 'number', `writable again, the drain finishes: ${(moved as Error)?.message ?? moved}`)
  t.same(segmentFiles(sim, own), [], 'no segment file of the store is left on the released volume')
  for (const [s, vs] of store.segmentPlacement()) t.same(vs, [volumeId(V)], `segment ${s} is on B`)
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  t.ok((await store.verify({ copies: 1 })).ok, 'verify is clean')
})

t.test('mirror lowered to 1: a drain that dropped a copy it could not delete; the next drain finishes', async t => {
  const { dir, A, V, sim, store, pool, policy } = await onTwo(t, 'drop-undeleted', 2)
  const volumeId = (d: string): string => pool.status().volumes.find(v => v.dir === d)!.id
  const data = new Rng(3).bytes(3 * MiB)
  await store.write(0, data)
  await store.flush()
  writePolicy(dir, { ...policy, mirror: 1 })
  pool.setPolicy({ ...policy, mirror: 1 })
  const own = pool.dirOf(volumeId(A))
  sim.locked = own
  const failed = await pool.drain(A).then(() => undefined, (e: unknown) => e)
  t.match((failed as Error)?.message, /not writable \(EPERM\)/, `the drain fails on the immutable directory: ${(failed as Error)?.message}`)
  sim.locked = undefined
  const moved = await pool.drain(A).then(n => n, (e: unknown) => e)
  t.type(moved, 'number', `writable again, the drain finishes: ${(moved as Error)?.message ?? moved}`)
  t.same(segmentFiles(sim, own), [], 'nothing of the store is left on A')
  t.equal(pool.status().volumes.find(v => v.dir === A)?.state, 'spare', 'A is released')
  for (const [s, vs] of store.segmentPlacement()) t.same(vs, [volumeId(V)], `segment ${s} is on B alone`)
  t.ok((await store.read(0, data.length)).equals(data), 'the data reads back')
  t.ok((await store.verify({ copies: 1 })).ok, 'verify is clean')
})

t.test('killed after the failed drain, reopened while the directory is still not writable: the next drain finishes', async t => {
  const { dir, A, V, sim, store, pool } = await onTwo(t, 'leftover-ahead-killed', 1)
  const volumeId = (d: string): string => pool.status().volumes.find(v => v.dir === d)!.id
  const data = new Rng(4).bytes(2 * MiB + 512 * 1024)
  await store.write(0, data)
  await store.flush()
  const own = pool.dirOf(volumeId(A))
  sim.locked = own
  t.ok(await pool.drain(A).then(() => false, () => true), 'the drain fails')
  await store.abandon() // kill -9: the copy of segment 0 on A stays beside the one on B the index names
  // Reopened while A is still not writable: the open cannot remove that copy, and counts it on A.
  const again = await openStore(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  t.teardown(() => again.store.close().catch(() => undefined))
  t.ok(segmentFiles(sim, own).includes('seg-000000000000.log'), 'the old copy of segment 0 is still on A')
  t.same(again.store.volumesOf(0), [volumeId(V)], 'the index names B for it')
  sim.locked = undefined
  const moved = await again.pool.drain(A).then(n => n, (e: unknown) => e)
  t.type(moved, 'number', `writable again, the drain finishes: ${(moved as Error)?.message ?? moved}`)
  t.same(segmentFiles(sim, own), [], 'nothing of the store is left on A')
  for (const [s, vs] of again.store.segmentPlacement()) t.same(vs, [volumeId(V)], `segment ${s} is on B`)
  t.ok((await again.store.read(0, data.length)).equals(data), 'the data reads back')
  t.ok((await again.store.verify({ copies: 1 })).ok, 'verify is clean')
})
