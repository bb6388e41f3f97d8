import t, { type Test } from 'tap'
import { isLogdiskError } from '../src/errors'
import { BASELINE_BASE } from '../src/store/baseline'
import { crc32c } from '../src/store/crc'
import { MAINTENANCE_RESERVE_BYTES } from '../src/store/pass-fence'
import type { StoreParts } from '../src/store/parts'
import { Store } from '../src/store/store'
import { B, CAPACITY_SEGMENTS, SEGMENT, fullPoolRig, losePowerDuring, roomLeft, writeBlock, type PoolRig } from './helpers/full-pool-rig'

/**
 * A baseline merge (`compact --into-baseline`, baseline-pass.ts) in a full pool, as
 * full-pool-reserve.test.ts does for compaction. The merge logs a history marker before it
 * rewrites a baseline slot that points after the horizon still read and whose log copy is
 * gone; the marker goes into the maintenance reserve (pass-fence.ts). When even the reserve
 * is used up, the merge used to fail with NO_SPACE; now it merges what needs no new marker
 * (blocks whose slot it need not take from a point) and leaves the rest in the log.
 *
 * The store: the blocks of segment 0 (about 250 of 320, each written once) merged into the
 * baseline once (their log copies freed, so a later merge that rewrites their slots must give
 * points up), then every block overwritten until the pool is full, with sync points in the
 * pool's last segment (restore points the checks read back), and the last room before the
 * reserve taken by sync markers. Every write is one block (one entry: it lands whole or not at
 * all), so the model is exact; everything is flushed before a merge. The reserve is used up by
 * history markers raised one sequence number at a time through the store's parts (as many
 * compactions in a full pool would leave it; no public call appends one alone).
 *
 * What is checked: the merge never fails for room; the current image, and every sync point
 * after the history horizon, read as the model (a point at or before the horizon may be
 * refused: the log says it was given up); after a power loss anywhere in the merge too; verify
 * is clean; writes work again once room is freed (by the merge itself when the reserve was
 * there, by a new pool volume when it was used up); a reopen reads the same.
 */
const BLOCKS = 320
const SIZE = BLOCKS * B

interface SyncPoint { name: string, seq: number, image: Buffer }

interface Rig extends PoolRig {
  points: SyncPoint[]
}

async function rig (t: Test, seed: number, copies: number): Promise<Rig> {
  return { ...await fullPoolRig(t, 'fullpool-baseline', seed, copies, BLOCKS), points: [] }
}

/** A sync point (one the checks restore later when `kept`); false when it got NO_SPACE. */
async function syncPoint (r: Rig, store: Store, kept: boolean): Promise<boolean> {
  const name = kept ? `p${r.points.length}` : `full ${store.status().index.position}`
  try {
    const { seq } = await r.drive(store.syncPoint(name))
    if (kept) r.points.push({ name, seq, image: Buffer.from(r.model) })
    return true
  } catch (err) {
    if (isLogdiskError(err, 'NO_SPACE')) return false
    throw err
  }
}

const partsOf = (store: Store): StoreParts => (store as unknown as { p: StoreParts }).p

/**
 * The whole image reads as the model, and so does every sync point after the history
 * horizon; points at or before it may be refused. Returns how many points were restored.
 */
async function check (t: Test, r: Rig, store: Store, when: string): Promise<number> {
  const got = await r.drive(store.read(0, SIZE))
  t.equal(crc32c(got), crc32c(r.model), `${when}: the image's CRC32C is the model's`)
  t.ok(got.equals(r.model), `${when}: every block reads as the model`)
  const horizon = store.status().history.horizonSeq
  let restored = 0
  const wrong: string[] = []
  for (const p of r.points) {
    let seq: number
    try {
      seq = (await r.drive(store.resolvePoint(p.name))).seq
    } catch (err) {
      if (p.seq <= horizon && isLogdiskError(err, 'BAD_ARGUMENT')) continue
      wrong.push(`${p.name} (seq ${p.seq}, horizon ${horizon}): ${(err as Error).message}`)
      continue
    }
    const image = Buffer.alloc(SIZE)
    try {
      await r.drive((async () => { for await (const { block, data } of store.imageAt(seq)) data.copy(image, block * B) })())
    } catch (err) {
      wrong.push(`${p.name} (seq ${seq}): ${(err as Error).message}`)
      continue
    }
    if (!image.equals(p.image)) wrong.push(`${p.name} (seq ${seq}, horizon ${horizon}): restored image differs`)
    restored++
  }
  t.same(wrong, [], `${when}: ${restored} of ${r.points.length} sync points restore as they were (horizon ${horizon})`)
  return restored
}

/**
 * The blocks of segment 0 (each written once: about 250) into the baseline, which frees their
 * log copies without giving up any point (no history marker: a segment that holds one is
 * never recycled), then the pool filled: every block, then overwrites until a write gets
 * NO_SPACE, with a sync point every 20 writes in the pool's last segment (a segment that holds
 * a sync marker is never recycled either: FORMAT.md, compaction); then sync markers up to the
 * reserve. Flushed. Returns the store and how many blocks went into the baseline first.
 */
async function fillPool (t: Test, r: Rig): Promise<{ store: Store, mergedFirst: number }> {
  const store = await r.drive(r.open())
  const segmentOf = (): number => Math.floor(store.status().index.position / SEGMENT)
  let mergedFirst = 0
  while (segmentOf() === 0) if (!await writeBlock(r, store, mergedFirst++)) throw new Error('NO_SPACE in an empty pool')
  const first = await r.drive(store.compactIntoBaseline())
  t.equal(first.blocks, mergedFirst, `blocks 0-${mergedFirst - 1} went into the baseline`)
  t.equal(first.compaction.segmentsRecycled, 1, 'their log copies were freed (segment 0 recycled)')
  t.equal(store.status().history.horizonSeq, 0, 'no point was given up (no history marker)')
  const last = segmentOf() + CAPACITY_SEGMENTS - 1
  for (let b = 0; b < BLOCKS; b++) if (!await writeBlock(r, store, b)) throw new Error(`block ${b}: NO_SPACE`)
  let writes = 0
  while (await writeBlock(r, store, (writes * 7) % BLOCKS)) {
    if (++writes % 20 === 0 && segmentOf() >= last && !await syncPoint(r, store, true)) break
    if (writes > 10 * CAPACITY_SEGMENTS * 258) throw new Error('the pool never filled')
  }
  t.equal(segmentOf(), last, `the pool is full with segment ${last}`)
  let syncs = 0
  while (await syncPoint(r, store, syncs === 0)) if (++syncs > 1000) throw new Error('sync markers never got NO_SPACE')
  await r.drive(store.flush())
  t.equal(r.home.candidates().length, 0, `the pool is full after ${writes} overwrites and ${r.points.length} sync points`)
  t.ok(roomLeft(store) >= MAINTENANCE_RESERVE_BYTES && roomLeft(store) < MAINTENANCE_RESERVE_BYTES + 200, `the reserve is all that is left (${roomLeft(store)} bytes)`)
  return { store, mergedFirst }
}

/**
 * Uses up the maintenance reserve with history markers, each raising the horizon by one
 * sequence number (as many compactions in a full pool, none of which recycled a segment, would
 * leave it). The horizon stays far below the sequence numbers the merge must give up.
 */
async function useUpReserve (t: Test, r: Rig, store: Store): Promise<void> {
  const history = partsOf(store).history
  let markers = 0
  for (;;) {
    try {
      await r.drive(history.raiseHorizon(history.horizon + 1))
    } catch (err) {
      if (!isLogdiskError(err, 'NO_SPACE')) throw err
      break
    }
    if (++markers > 1000) throw new Error('history markers never got NO_SPACE')
  }
  t.ok(markers > 0 && roomLeft(store) < 200, `${markers} history markers used up the reserve (${roomLeft(store)} bytes left)`)
}

/** How many blocks' newest versions are in the log (not in the baseline). */
function inLog (store: Store): number {
  let n = 0
  partsOf(store).map.forEach((_block, position) => { if (position >= 0 && position < BASELINE_BASE) n++ })
  return n
}

/** Adds pool volumes: room for one more segment of every copy. */
function freeRoom (r: Rig): void {
  for (let i = 0; i < r.home.copies; i++) r.home.grow()
}

/** Writes work again: more than a segment holds (about 250), so they roll onto the room given back. */
async function writesWork (t: Test, r: Rig, store: Store, step: number): Promise<void> {
  let written = 0
  for (let j = 0; j < 300; j++) if (await writeBlock(r, store, (j * step) % BLOCKS)) written++
  t.equal(written, 300, 'every write went in')
  await r.drive(store.flush())
}

async function reopenAndVerify (t: Test, r: Rig, store: Store, when: string): Promise<void> {
  await r.drive(store.close())
  r.home.resetAccounting()
  const again = await r.drive(r.open())
  await check(t, r, again, `${when}, after a clean reopen`)
  const verify = await r.drive(again.verify())
  t.same(verify.problems, [], `${when}: verify is clean`)
  await r.drive(again.close())
}

for (const copies of [1, 2]) {
  const name = `${copies} cop${copies > 1 ? 'ies' : 'y'}`
  t.test(`${name}: a baseline merge in a full pool puts its marker in the reserve and gives room back`, async t => {
    const r = await rig(t, 0xba5e + copies, copies)
    const { store } = await fillPool(t, r)
    await check(t, r, store, 'full pool')
    const result = await r.drive(store.compactIntoBaseline())
    t.equal(result.blocks, BLOCKS, 'every block went into the baseline')
    t.ok(roomLeft(store) < MAINTENANCE_RESERVE_BYTES, 'its markers went into the reserve, not onto a new segment')
    t.ok(result.compaction.segmentsRecycled > 0 && r.home.candidates().length > 0, `the pool has room again (${result.compaction.segmentsRecycled} segments recycled)`)
    await check(t, r, store, 'after the merge')
    await writesWork(t, r, store, 5)
    await check(t, r, store, 'after new writes')
    await reopenAndVerify(t, r, store, name)
  })

  t.test(`${name}: with the reserve used up, the merge does what needs no marker instead of failing`, async t => {
    const r = await rig(t, 0xba5e + copies, copies)
    const { store, mergedFirst } = await fillPool(t, r)
    await useUpReserve(t, r, store)
    const horizon = store.status().history.horizonSeq
    const restorable = await check(t, r, store, 'reserve used up')
    t.ok(restorable > 0, 'sync points after the horizon exist (the merge must keep them)')
    t.notOk(await writeBlock(r, store, 3), 'a write gets NO_SPACE')

    const outcome = await r.drive(store.compactIntoBaseline()).then(x => x, (err: Error) => err)
    if (outcome instanceof Error) {
      t.fail(`the merge failed: ${outcome.message}`)
      return
    }
    t.ok(outcome.blocks >= BLOCKS - mergedFirst && outcome.blocks < BLOCKS, `${outcome.blocks} blocks merged (those whose slot no point needed); the rest stay in the log`)
    t.equal(store.status().history.horizonSeq, horizon, 'no point was given up (no marker fit)')
    t.equal(inLog(store), BLOCKS - outcome.blocks, 'the blocks it left read from the log')
    t.equal(await check(t, r, store, 'after the merge'), restorable, 'every point restorable before is restorable after')
    t.notOk(await writeBlock(r, store, 3), 'writes still get NO_SPACE (nothing whole was given back)')

    freeRoom(r)
    await writesWork(t, r, store, 7)
    await check(t, r, store, 'after room was freed and new writes')
    await r.drive(store.compactIntoBaseline())
    t.equal(inLog(store), 0, 'with room, a merge takes every block (none reads from the log)')
    await check(t, r, store, 'after a merge with room')
    await reopenAndVerify(t, r, store, name)
  })
}

/** Power failures at points spread over a merge in a full pool: with the reserve there and used up. */
for (const usedUp of [false, true]) {
  t.test(`the power fails at points spread over a baseline merge in a full pool, reserve ${usedUp ? 'used up' : 'free'}`, async t => {
    const seed = usedUp ? 0xdead : 0xbeef
    const prepare = async (r: Rig): Promise<Store> => {
      const { store } = await fillPool(t, r)
      if (usedUp) await useUpReserve(t, r, store)
      return store
    }
    const probe = await rig(t, seed, 1)
    const probeStore = await prepare(probe)
    const before = probe.sched.steps
    await probe.drive(probeStore.compactIntoBaseline())
    const steps = probe.sched.steps - before
    await probe.drive(probeStore.close())
    t.ok(steps > 10, `an undisturbed merge takes ${steps} I/O steps`)

    const points = 5
    for (let i = 0; i < points; i++) {
      const crashAfterSteps = Math.floor((steps * (i + 0.5)) / points)
      await t.test(`power fails after ${crashAfterSteps} of the merge's ${steps} steps`, async t => {
        const r = await rig(t, seed, 1) // the same store, pool and writes as the probe
        const store = await prepare(r)
        t.ok(await losePowerDuring(r, store, store.compactIntoBaseline(), crashAfterSteps), 'the power failed while the merge ran')

        const reopened = await r.drive(r.open())
        await check(t, r, reopened, 'after the crash') // every write was flushed before it
        t.same((await r.drive(reopened.verify())).problems, [], 'verify is clean after the crash')
        if (usedUp) freeRoom(r)
        const again = await r.drive(reopened.compactIntoBaseline())
        t.ok(r.home.candidates().length > 0, `the second merge left room in the pool (it recycled ${again.compaction.segmentsRecycled})`)
        await check(t, r, reopened, 'after a second merge')
        await writesWork(t, r, reopened, 5)
        await check(t, r, reopened, 'after new writes')
        await reopenAndVerify(t, r, reopened, 'after the crash')
      })
    }
  })
}
