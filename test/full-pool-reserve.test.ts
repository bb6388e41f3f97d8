import t, { type Test } from 'tap'
import { isLogdiskError } from '../src/errors'
import { crc32c } from '../src/store/crc'
import { MAINTENANCE_RESERVE_BYTES } from '../src/store/pass-fence'
import type { Store } from '../src/store/store'
import { B, CAPACITY_SEGMENTS, fullPoolRig, losePowerDuring, roomLeft, writeBlock, type PoolRig } from './helpers/full-pool-rig'

/**
 * A full pool and the maintenance reserve (pass-fence.ts MAINTENANCE_RESERVE_BYTES): writes
 * fill a small simulated pool until they get NO_SPACE; the current segment still has the
 * reserve free; deleting a snapshot and compacting work (compaction's history marker goes
 * into the reserve: before the fix it needed a new segment and failed with NO_SPACE, seed
 * 7300024 of the simulation), give whole segments back to the pool, and writes work again;
 * the image reads as the model says (CRC32C of the whole image), after a reopen too. Then the
 * same with the power failing at points spread over the compaction, and with writes racing
 * the compaction at the limit.
 *
 * Every write is one block (one entry: it lands whole or not at all), so the model is exact.
 */
const BLOCKS = 96
const SIZE = BLOCKS * B

/** The whole image reads as the model (compared by CRC32C, and byte for byte). */
async function checkImage (t: Test, r: PoolRig, store: Store, when: string): Promise<void> {
  const got = await r.drive(store.read(0, SIZE))
  t.equal(crc32c(got), crc32c(r.model), `${when}: the image's CRC32C is the model's`)
  t.ok(got.equals(r.model), `${when}: every block reads as the model`)
}

/**
 * Fills the pool: the whole image, snapshot s1 (it pins that version of every block), then
 * overwrites until a write gets NO_SPACE. Flushed. Returns the open store.
 */
async function fillPool (t: Test, r: PoolRig): Promise<Store> {
  const store = await r.drive(r.open())
  for (let b = 0; b < BLOCKS; b++) if (!await writeBlock(r, store, b)) throw new Error(`block ${b}: NO_SPACE in an empty pool`)
  await r.drive(store.snapshot({ name: 's1' }))
  let writes = 0
  while (await writeBlock(r, store, writes % BLOCKS)) {
    writes++
    if (writes > 10 * CAPACITY_SEGMENTS * 258) throw new Error('the pool never filled')
  }
  await r.drive(store.flush())
  t.ok(writes > 0, `${writes} overwrites went in before the pool was full`)
  return store
}

/**
 * Sync markers are foreground appends too: small ones still fit before the reserve after the
 * writes were refused, until the next one would go into it. Fills that last room.
 */
async function fillWithSyncs (t: Test, r: PoolRig, store: Store): Promise<void> {
  let syncs = 0
  for (;;) {
    try {
      await r.drive(store.syncPoint(`full ${syncs}`))
    } catch (err) {
      t.equal((err as { code?: string }).code, 'NO_SPACE', `after ${syncs} sync markers the next one gets NO_SPACE`)
      return
    }
    if (++syncs > 1000) throw new Error('sync markers never got NO_SPACE')
  }
}

for (const copies of [1, 2]) {
  t.test(`${copies} cop${copies > 1 ? 'ies' : 'y'}: writes get NO_SPACE with the reserve kept, compaction frees room, writes work again`, async t => {
    const r = await fullPoolRig(t, 'fullpool-reserve', 0xf011 + copies, copies, BLOCKS)
    const store = await fillPool(t, r)
    t.equal(r.home.candidates().length, 0, 'the pool has no room for another segment')
    t.ok(roomLeft(store) >= MAINTENANCE_RESERVE_BYTES, `the current segment keeps the reserve free (${roomLeft(store)} bytes left)`)
    t.notOk(await writeBlock(r, store, 7), 'another write gets NO_SPACE')
    await fillWithSyncs(t, r, store)
    const left = roomLeft(store)
    t.ok(left >= MAINTENANCE_RESERVE_BYTES && left < MAINTENANCE_RESERVE_BYTES + 200, `the refused appends left the reserve free (${left} bytes left)`)
    await checkImage(t, r, store, 'full pool')
    const horizon = store.status().history.horizonSeq

    await r.drive(store.deleteSnapshot('s1')) // may use the first half of the reserve
    const report = await r.drive(store.compact())
    t.ok(store.status().history.horizonSeq > horizon, 'compaction logged a history marker (in the reserve)')
    t.ok(roomLeft(store) < MAINTENANCE_RESERVE_BYTES, 'the markers went into the reserve, not onto a new segment')
    t.ok(report.segmentsRecycled > 0, `compaction recycled ${report.segmentsRecycled} segments`)
    t.ok(r.home.candidates().length > 0, 'the pool has room again')
    await checkImage(t, r, store, 'after compaction')

    // More than the reserve holds: the next write rolls onto a segment the compaction freed.
    let written = 0
    for (let i = 0; i < 2 * BLOCKS; i++) if (await writeBlock(r, store, (i * 7) % BLOCKS)) written++
    t.equal(written, 2 * BLOCKS, 'every write after the compaction went in')
    t.ok(roomLeft(store) >= MAINTENANCE_RESERVE_BYTES, 'the new current segment keeps its reserve')
    await checkImage(t, r, store, 'after new writes')
    await r.drive(store.close())

    r.home.resetAccounting()
    const again = await r.drive(r.open())
    await checkImage(t, r, again, 'after a reopen')
    t.same(again.snapshots().map(s => s.name), [], 'the deleted snapshot stays deleted')
    t.ok((await r.drive(again.verify())).ok, 'verify is clean')
    await r.drive(again.close())
  })
}

t.test('the power fails at points spread over a compaction in a full pool: recovery, a second compaction and new writes work', async t => {
  // How many I/O steps a compaction in a full pool takes, to spread the crashes over it.
  const probe = await fullPoolRig(t, 'fullpool-reserve', 0xc0de, 1, BLOCKS)
  const probeStore = await fillPool(t, probe)
  await fillWithSyncs(t, probe, probeStore) // the deletion and history markers go into the reserve
  await probe.drive(probeStore.deleteSnapshot('s1'))
  const before = probe.sched.steps
  await probe.drive(probeStore.compact())
  const steps = probe.sched.steps - before
  await probe.drive(probeStore.close())
  t.ok(steps > 10, `an undisturbed compaction takes ${steps} I/O steps`)

  const points = 8
  for (let i = 0; i < points; i++) {
    const crashAfterSteps = Math.floor((steps * (i + 0.5)) / points)
    await t.test(`power fails after ${crashAfterSteps} of the compaction's ${steps} steps`, async t => {
      const r = await fullPoolRig(t, 'fullpool-reserve', 0xc0de, 1, BLOCKS) // the same store, pool and writes as the probe
      const store = await fillPool(t, r)
      await fillWithSyncs(t, r, store)
      await r.drive(store.deleteSnapshot('s1'))
      t.ok(roomLeft(store) < MAINTENANCE_RESERVE_BYTES, 'the deletion marker is in the reserve')
      const horizon = store.status().history.horizonSeq
      t.ok(await losePowerDuring(r, store, store.compact(), crashAfterSteps), 'the power failed while the compaction ran')

      const reopened = await r.drive(r.open())
      t.comment(`after the crash: horizon ${reopened.status().history.horizonSeq} (was ${horizon}), ${roomLeft(reopened)} bytes left in the current segment`)
      await checkImage(t, r, reopened, 'after the crash') // every write was flushed before it
      t.same(reopened.snapshots().map(s => s.name), [], 'the deletion was durable before the compaction began')
      t.ok(roomLeft(reopened) < MAINTENANCE_RESERVE_BYTES, 'recovery kept the markers in the reserve (the tail is where they end)')
      const report = await r.drive(reopened.compact())
      t.ok(r.home.candidates().length > 0, `the second compaction left room in the pool (it recycled ${report.segmentsRecycled})`)
      let written = 0
      for (let j = 0; j < 2 * BLOCKS; j++) if (await writeBlock(r, reopened, (j * 5) % BLOCKS)) written++
      t.equal(written, 2 * BLOCKS, 'writes work again')
      await r.drive(reopened.flush())
      await checkImage(t, r, reopened, 'after new writes')
      await r.drive(reopened.close())
      r.home.resetAccounting()
      const again = await r.drive(r.open())
      await checkImage(t, r, again, 'after a clean reopen')
      t.ok((await r.drive(again.verify())).ok, 'verify is clean')
      await r.drive(again.close())
    })
  }
})

t.test('writes racing a compaction at the pool limit: the compaction never fails for room, each write lands whole or gets NO_SPACE', async t => {
  for (const seed of [1, 2, 3, 4]) {
    const r = await fullPoolRig(t, 'fullpool-reserve', 0xace0 + seed, 1 + (seed % 2), BLOCKS)
    const store = await fillPool(t, r)
    await r.drive(store.deleteSnapshot('s1'))
    const outcomes: string[] = []
    const writes = Array.from({ length: 40 }, async (_, i) => {
      const block = (i * 11) % BLOCKS
      const data = r.rng.bytes(B)
      for (let k = r.rng.int(30); k > 0; k--) await r.sched.io('idle') // land at a seeded moment
      try {
        await store.write(block * B, data)
        data.copy(r.model, block * B) // each block is written by one write alone
        outcomes.push('ok')
      } catch (err) {
        if (!isLogdiskError(err, 'NO_SPACE')) throw err
        outcomes.push('NO_SPACE')
      }
    })
    const compaction = store.compact().then(() => 'compacted', (err: Error) => `compaction failed: ${err.message}`)
    const all = Promise.all([compaction, Promise.all(writes)])
    await r.drive(all)
    t.equal(await compaction, 'compacted', `seed ${seed}: the compaction succeeded`)
    t.comment(`seed ${seed}: ${outcomes.filter(o => o === 'ok').length} writes landed, ${outcomes.filter(o => o !== 'ok').length} got NO_SPACE`)
    await r.drive(store.flush())
    await checkImage(t, r, store, `seed ${seed}, after the race`)
    await r.drive(store.close())
    r.home.resetAccounting()
    const again = await r.drive(r.open())
    await checkImage(t, r, again, `seed ${seed}, after a reopen`)
    await r.drive(again.close())
  }
})
