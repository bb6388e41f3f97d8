import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { segmentFileName } from '../src/store/format'
import type { SegmentHome } from '../src/store/segment-home'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer, errno } from '../src/testing/sim-file-layer'
import { PassThroughLayer, writeRandom } from './helpers/sim-layer'

/**
 * The segment after the current one is made ahead, off the writers' path (next-segment.ts):
 * a roll swaps it in, a drain or a close removes it, a crash leaves an empty segment that
 * recovery takes as the current one, and a placement that no longer suits is not used.
 * All on the simulated disk, so every file operation can fail on purpose.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024
const HEADER = 4096

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-next-segment-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A store on the simulated disk and a model of its bytes; `fill` writes until `until` says stop. */
async function setup (t: Test, home?: SegmentHome, aside: 'rename' | 'cross-device' | 'first fails once' | 'second fails once' = 'rename'): Promise<{ dir: string, sim: SimFileLayer, store: Store, model: Buffer, rng: Rng, open: () => Promise<Store> }> {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  // Segments on another filesystem than the store's lost+found: rename(2) between them fails.
  const layer = aside === 'rename' ? sim : new CrossDeviceLayer(sim, aside === 'first fails once' ? 1 : aside === 'second fails once' ? 2 : 0)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0, ...(home ? { home } : {}) })
  return { dir, sim, store: await open(), model: Buffer.alloc(SIZE), rng: new Rng(0x5e9), open }
}


/**
 * Renames into lost+found fail with EXDEV, as from a pool volume on another filesystem; with
 * `failAt`, the move of that many-th segment there fails once with ENOSPC instead (the store's
 * filesystem full during the copy).
 */
class CrossDeviceLayer extends PassThroughLayer {
  private moves = 0
  constructor (sim: SimFileLayer, private failAt = 0) { super(sim) }
  async rename (from: string, to: string): Promise<void> {
    if (to.includes('lost+found') && !from.includes('lost+found')) {
      if (++this.moves === this.failAt) {
        this.failAt = 0
        throw errno('ENOSPC', `rename ${from}`)
      }
      throw errno('EXDEV', `rename ${from}`)
    }
    return await this.sim.rename(from, to)
  }
}

/** The id of the segment being appended to. */
const currentId = (store: Store): number => Math.floor(store.status().index.position / SEGMENT)

/** Writes 16-block writes until the current segment is `fraction` full or the log rolls. */
async function fillTo (store: Store, model: Buffer, rng: Rng, fraction: number): Promise<void> {
  const id = currentId(store)
  while (currentId(store) === id && store.status().index.position % SEGMENT < fraction * SEGMENT) await writeRandom(store, model, rng, 16)
}

/** Waits (turns of the event loop, bounded) until `file` holds at least a segment header. */
async function madeAhead (sim: SimFileLayer, file: string): Promise<boolean> {
  for (let i = 0; i < 2000; i++) {
    if ((sim.readFile(file)?.length ?? 0) >= HEADER) return true
    await new Promise(resolve => setImmediate(resolve))
  }
  return false
}

/** Closes `store`, opens it again: every byte of `model` reads back and verify is clean. */
async function closeAndCheck (t: Test, store: Store, open: () => Promise<Store>, model: Buffer): Promise<void> {
  await store.close()
  const again = await open()
  t.ok((await again.read(0, SIZE)).equals(model), 'every byte reads back after reopen')
  t.ok((await again.verify()).ok, 'verify clean')
  await again.close()
}

const segFile = (dir: string, id: number, volume = 'segments'): string => path.join(dir, volume, segmentFileName(id))


t.test('a roll swaps in the segment made ahead: it makes no file while writers wait', async t => {
  const { dir, sim, store, model, rng, open } = await setup(t)
  await fillTo(store, model, rng, 0.6)
  t.ok(await madeAhead(sim, segFile(dir, 1)), 'segment 1 is made once segment 0 is half full')
  t.equal(store.status().segments.active, 0, 'no roll yet')
  // A roll that had to make its segment now would fail on this open; the made one needs none.
  sim.failNext('open', 'EIO')
  while (currentId(store) === 0) await writeRandom(store, model, rng, 16)
  t.equal(currentId(store), 1, 'rolled onto segment 1')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  // The failed open went to making segment 2 ahead, right after the roll. That is not tried
  // again (a full disk would fail every write's try): the next roll makes segment 2 itself.
  await fillTo(store, model, rng, 0.6)
  for (let i = 0; i < 50; i++) await new Promise(resolve => setImmediate(resolve))
  t.notOk(sim.files().includes(segFile(dir, 2)), 'segment 2 was not made ahead')
  while (currentId(store) === 1) await writeRandom(store, model, rng, 16)
  await fillTo(store, model, rng, 0.6)
  t.ok(await madeAhead(sim, segFile(dir, 3)), 'after that roll, segment 3 is made ahead again')
  await store.close()
  t.notOk(sim.files().includes(segFile(dir, 3)), 'close removed the segment made ahead')
  await closeAndCheck(t, store, open, model) // closed already: only reopens and checks
})

t.test('a drain moving the segment made ahead removes it; the next roll makes another', async t => {
  const { dir, sim, store, model, rng, open } = await setup(t)
  await fillTo(store, model, rng, 0.6)
  t.ok(await madeAhead(sim, segFile(dir, 1)), 'segment 1 is made ahead')
  await store.relocateSegment(1, 'local', 'elsewhere')
  t.notOk(sim.files().includes(segFile(dir, 1)), 'its file is gone, nothing was copied')
  while (currentId(store) === 0) await writeRandom(store, model, rng, 16)
  t.ok(sim.files().includes(segFile(dir, 1)), 'the roll made segment 1 again')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  await closeAndCheck(t, store, open, model)
})

t.test('killed with a segment made ahead: recovery takes it as the current segment, nothing flushed is lost', async t => {
  const { dir, sim, store, model, rng, open } = await setup(t)
  await fillTo(store, model, rng, 0.6)
  t.ok(await madeAhead(sim, segFile(dir, 1)), 'segment 1 is made ahead')
  await store.flush()
  await store.abandon() // kill -9: the file stays, and so does its header (in the page cache)
  let again = await open()
  t.ok((await again.read(0, SIZE)).equals(model), 'every flushed byte reads back')
  t.equal(currentId(again), 1, 'the empty segment made ahead is the current one')
  t.same(again.recovery.orphanedSegments, [], 'nothing set aside')
  for (let i = 0; i < 40; i++) await writeRandom(again, model, rng, 16) // past another roll
  await again.flush()
  t.ok(currentId(again) >= 2, 'writes went on and rolled again')
  await again.abandon()
  sim.crash(rng)
  again = await open()
  t.ok((await again.read(0, SIZE)).equals(model), 'every flushed byte reads back after a power loss')
  t.same(again.recovery.orphanedSegments, [], 'nothing set aside after the power loss')
  t.ok((await again.verify()).ok, 'verify clean')
  await again.close()
})

// A segment made ahead is not synced until it is current and a flush syncs it (segment.ts
// create): a power loss may take its name, its header page, or neither.
t.test('a power loss with a segment made ahead and never synced: it is gone, removed, or the current one; nothing set aside', async t => {
  const outcomes = new Set<string>()
  for (let round = 0; round < 12; round++) {
    const { dir, sim, store, model, rng, open } = await setup(t)
    await fillTo(store, model, rng, 0.6)
    t.ok(await madeAhead(sim, segFile(dir, 1)), `round ${round}: segment 1 is made ahead`)
    await store.flush()
    await store.abandon()
    if (round === 0) sim.poke(segFile(dir, 1), 0, Buffer.alloc(HEADER)) // its header page lost
    else if (round === 1) {
      // The header write cut short: its first 68 bytes check out, the page is not whole.
      // Taken as the current segment, its tail lay past the file's end, the next checkpoint
      // named a position the file never reached, and the next open rebuilt the index
      // (simulation seed 5).
      const h = await sim.open(segFile(dir, 1), false)
      await h.truncate(3194)
      await h.datasync()
      await h.close()
    } else sim.crash(rng, { pages: round % 2 === 0 })
    const present = sim.readFile(segFile(dir, 1)) !== undefined
    const again = await open()
    t.ok((await again.read(0, SIZE)).equals(model), `round ${round}: every flushed byte reads back`)
    t.same(again.recovery.orphanedSegments, [], `round ${round}: nothing set aside`)
    const now = sim.readFile(segFile(dir, 1))
    outcomes.add(!present ? 'gone' : now === undefined ? 'removed' : 'current')
    if (now !== undefined) t.equal(currentId(again), 1, `round ${round}: the segment kept is the current one`)
    else t.equal(currentId(again), 0, `round ${round}: segment 0 stays current`)
    if (round === 1) t.same(again.recovery.unfinishedSegments, [1], 'round 1: the segment with a header page cut short is removed')
    for (let i = 0; i < 40; i++) await writeRandom(again, model, rng, 16)
    await again.close()
    const last = await open()
    t.notOk(last.recovery.rebuiltIndex, `round ${round}: the next open finds the index in step with the log`)
    await closeAndCheck(t, last, open, model)
  }
  t.ok(outcomes.has('removed'), `a header lost with the power was removed (outcomes: ${[...outcomes].join(', ')})`)
})

// A sealed segment made ahead keeps an unsynced header until a flush: a power loss may take
// its header page and keep the next segment's. The log records whether a flush covered it.
t.test('an unreadable header of a sealed segment: unflushed, the log ends before it; flushed, damage', async t => {
  for (const [flushed, aside] of [[false, 'rename'], [true, 'rename'], [false, 'cross-device'], [false, 'second fails once']] as const) {
    const what = `${flushed ? 'flushed' : 'unflushed'}${aside === 'rename' ? '' : aside === 'cross-device' ? ', segments on another filesystem than lost+found' : ', the second set aside failing once (a full filesystem)'}`
    const { dir, sim, store, model, rng, open } = await setup(t, undefined, aside)
    await fillTo(store, model, rng, 0.9)
    await store.flush() // segment 1 is made ahead, not synced
    // One-block writes up to the roll: the one that rolls lands whole in segment 1, so
    // segment 0 ends with the volume as it was just before it.
    let segment0 = Buffer.from(model)
    while (currentId(store) === 0) {
      segment0 = Buffer.from(model)
      await writeRandom(store, model, rng, 1)
    }
    await fillTo(store, model, rng, 1) // segment 1 fills, rolls into segment 2
    await writeRandom(store, model, rng, 4)
    if (flushed) {
      await store.flush()
      await writeRandom(store, model, rng, 4) // records that everything before it is durable
    }
    t.equal(currentId(store), 2, `${what}: segment 2 is current`)
    await store.abandon()
    sim.poke(segFile(dir, 1), 0, Buffer.alloc(HEADER)) // its header page lost (or rotten)
    // An open that fails part way leaves what the next one decides the same way from.
    if (aside === 'second fails once') await t.rejects(open(), { code: 'NO_SPACE' }, `${what}: the first open fails`)
    const again = await open()
    if (!flushed) {
      t.same(again.recovery.damaged, [], `${what}: no damage reported`)
      t.ok((await again.read(0, SIZE)).equals(segment0), `${what}: the volume is as segment 0 left it`)
      t.ok(again.recovery.orphanedSegments.length >= 2, `${what}: segments 1 and 2 are set aside with their unflushed entries`)
      for (const id of [1, 2]) t.notOk(sim.readFile(segFile(dir, id)) !== undefined, `${what}: segment ${id} left its place`)
      t.ok(sim.readFile(again.recovery.orphanedSegments.at(-1)!) !== undefined, `${what}: and is in lost+found`)
      t.ok((await again.verify()).ok, `${what}: verify clean`)
    } else {
      t.same(again.recovery.damaged.map(d => d.segment), [1], `${what}: segment 1 is reported as damage`)
      t.same(again.recovery.orphanedSegments, [], `${what}: nothing set aside`)
      t.notOk((await again.verify()).ok, `${what}: verify reports it`)
    }
    await again.close()
  }
})

// Recovery decides everything before it changes anything: a torn entry in segment 1 with
// segment 2 after it. The cut of segment 1 was made during the scan, before segment 2 went
// aside: an open failing at the set-aside left segment 1 cut and segment 2 in place, so the
// next open read segment 2 against a clean end instead of the torn entry.
t.test('a torn entry with a segment after it: an open whose set-aside fails leaves the torn segment as it was; the next open cuts the same', async t => {
  const results: Array<{ image: Buffer, cut: unknown }> = []
  for (const aside of ['cross-device', 'first fails once'] as const) {
    const { dir, sim, store, model, rng, open } = await setup(t, undefined, aside)
    await fillTo(store, model, rng, 1) // segment 0 fills, rolls into segment 1
    await fillTo(store, model, rng, 0.5)
    await store.flush()
    const flushed = Buffer.from(model)
    const torn = store.status().index.position // where the first unflushed entry goes
    t.equal(Math.floor(torn / SEGMENT), 1, `${aside}: the first unflushed entry is in segment 1`)
    await writeRandom(store, model, rng, 16)
    await fillTo(store, model, rng, 1) // segment 1 fills, rolls into segment 2
    await writeRandom(store, model, rng, 16)
    t.equal(currentId(store), 2, `${aside}: segment 2 is current`)
    await store.abandon()
    sim.poke(segFile(dir, 1), torn % SEGMENT + 2 * B, Buffer.alloc(512, 0xa5)) // its data torn
    const size = sim.readFile(segFile(dir, 1))!.length
    if (aside === 'first fails once') {
      await t.rejects(open(), { code: 'NO_SPACE' }, `${aside}: the first open fails setting segment 2 aside`)
      t.equal(sim.readFile(segFile(dir, 1))?.length, size, `${aside}: and leaves segment 1 as it was (${size} bytes)`)
      t.ok(sim.readFile(segFile(dir, 2)) !== undefined, `${aside}: and segment 2 in place`)
    }
    const again = await open()
    t.same(again.recovery.damaged, [], `${aside}: no damage reported`)
    t.equal(again.recovery.cut?.offset, torn % SEGMENT, `${aside}: segment 1 is cut at the torn entry`)
    const image = await again.read(0, SIZE)
    t.ok(image.equals(flushed), `${aside}: the volume is as the flush left it`)
    t.ok((await again.verify()).ok, `${aside}: verify clean`)
    results.push({ image, cut: { ...again.recovery.cut, savedTo: undefined } })
    await again.close()
  }
  t.same(results[1].cut, results[0].cut, 'the open after a failed one cuts as one that never failed')
})

t.test('a segment made ahead on volumes that no longer suit is removed, and the roll places anew', async t => {
  let choice = 'a'
  let dir = ''
  const home: SegmentHome = {
    dirOf: v => path.join(dir, `vol-${v}`),
    volumes: () => ['a', 'b'],
    place: async () => [choice],
    occupied () {},
    vacated () {},
    stillSuits: vs => vs.length === 1 && vs[0] === choice
  }
  const s = await setup(t, home)
  dir = s.dir
  const { sim, model, rng } = s
  let store = s.store
  // setup opened the store before `dir` was set: reopen with the home's directories right.
  await store.close()
  for (const f of sim.files()) t.notOk(f.startsWith(path.join(dir, 'vol-b')), `nothing on b yet (${path.basename(f)})`)
  store = await s.open()
  await fillTo(store, model, rng, 0.6)
  t.ok(await madeAhead(sim, path.join(dir, 'vol-a', segmentFileName(1))), 'segment 1 is made ahead on a')
  choice = 'b' // a drain of a began, say
  while (currentId(store) === 0) await writeRandom(store, model, rng, 16)
  t.ok(sim.files().includes(path.join(dir, 'vol-b', segmentFileName(1))), 'the roll made segment 1 on b')
  t.notOk(sim.files().includes(path.join(dir, 'vol-a', segmentFileName(1))), 'the one made ahead on a is gone')
  t.same(store.volumesOf(1), ['b'], 'the index names b')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  await closeAndCheck(t, store, s.open, model)
})

t.test('making ahead fails (a full disk): the roll makes the segment itself', async t => {
  const { dir, sim, store, model, rng, open } = await setup(t)
  await fillTo(store, model, rng, 0.45)
  sim.failNext('open', 'ENOSPC') // taken by the making ahead, which starts at half full
  await fillTo(store, model, rng, 0.6)
  for (let i = 0; i < 50; i++) await new Promise(resolve => setImmediate(resolve))
  t.notOk(sim.files().includes(segFile(dir, 1)), 'nothing was made ahead')
  while (currentId(store) === 0) await writeRandom(store, model, rng, 16)
  t.ok(sim.files().includes(segFile(dir, 1)), 'the roll made segment 1')
  t.ok((await store.read(0, SIZE)).equals(model), 'every byte reads back')
  await closeAndCheck(t, store, open, model)
})
