import path from 'node:path'
import t, { type Test } from 'tap'
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { threeVolumeStore } from './helpers/mirrored-sim-store'
import { scratchDir, writeRandom } from './helpers/sim-layer'
import { checkTornTailRebuild } from './helpers/torn-rebuild'

/**
 * A full rebuild (the index lost with the power) after a power loss that kept, of the writes
 * after the last flush, the header page of the first unflushed entry (not the rest of it, nor
 * any later entry's pages) and, of the segment rolled into after it, the header page and the
 * length but none of its entry pages (simulation seed 7310047, PAGES=1 REBUILDS=1: a
 * compaction under a burst of writes, the fdatasync of segment 2 failing as the power went).
 * The rebuild took the next segment, longer than a header with a valid header, for a segment
 * holding entries, so the one before was not the end of the log, and its torn unflushed entry
 * (nothing after it readable to say whether it was flushed) was kept as damage: indexed with
 * bad blocks, and a block whose flushed version was intact read EIO. With two copies, the
 * first copy (torn) was then copied over the second (which ended cleanly where the flush
 * had left it). A segment whose first entry is not there ends nothing: the torn entry before
 * it is the end of the log and is cut.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024
const PAGE = 4096

/**
 * Writes until segment 0 is 70 % full, flushes, writes one 16-block entry (the one the power
 * loss tears), then more until segment 1 holds entries; abandons the store. Returns where the
 * torn entry starts, the image as flushed and as last written.
 */
async function writeAcrossRoll (store: Store, rng: Rng, segment1: string, sim: SimFileLayer): Promise<{ torn: number, flushed: Buffer, model: Buffer }> {
  const model = Buffer.alloc(SIZE)
  while (store.status().index.position % SEGMENT < 0.7 * SEGMENT) await writeRandom(store, model, rng, 16)
  await store.flush()
  const flushed = Buffer.from(model)
  const torn = store.status().index.position % SEGMENT
  await writeRandom(store, model, rng, 16)
  while ((sim.readFile(segment1)?.length ?? 0) <= SEGMENT_HEADER_BYTES) await writeRandom(store, model, rng, 16)
  for (let i = 0; i < 4; i++) await writeRandom(store, model, rng, 16)
  await store.abandon()
  return { torn, flushed, model }
}

/** What the power loss left of `file` from `from` on: its length, zeros (pages never written back). */
function zeroFrom (sim: SimFileLayer, file: string, from: number): void {
  const length = sim.readFile(file)!.length
  if (length > from) sim.poke(file, from, Buffer.alloc(length - from))
}

/** The page after the one holding the torn entry's header: from there, nothing of the unflushed writes reached the disk. */
const afterHeaderPage = (torn: number): number => (Math.floor(torn / PAGE) + 2) * PAGE

t.setTimeout(120_000)

t.test('one copy: the next segment kept its header page, not its entries; the torn unflushed entry before it is cut, not damage', async (t: Test) => {
  const dir = scratchDir(t, 'rebuild-torn-empty-next')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const segment0 = path.join(dir, 'segments', segmentFileName(0))
  const segment1 = path.join(dir, 'segments', segmentFileName(1))
  const { torn, flushed, model } = await writeAcrossRoll(await open(), new Rng(0x7310), segment1, sim)
  zeroFrom(sim, segment0, afterHeaderPage(torn))
  zeroFrom(sim, segment1, SEGMENT_HEADER_BYTES)
  await checkTornTailRebuild(t, dir, open, flushed, model, B)
})

t.test('two copies, the first torn past the flush and the second at its flushed length: the rebuild cuts the torn entry and both copies serve the flushed image', async (t: Test) => {
  const dir = scratchDir(t, 'rebuild-torn-empty-next-mirror')
  const sim = new SimFileLayer()
  const { volumes, open } = await threeVolumeStore(dir, sim, sim, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const file = (v: string, id: number): string => path.join(dir, `vol-${v}`, segmentFileName(id))
  const { torn, flushed, model } = await writeAcrossRoll(await open(), new Rng(0x7311), file(volumes[0], 1), sim)
  // Copy 1 at its current length, the torn entry's header page kept, nothing after it;
  // copy 2 at the length the last flush made durable (the pages model keeps either length).
  zeroFrom(sim, file(volumes[0], 0), afterHeaderPage(torn))
  const second = await sim.open(file(volumes[1], 0), false)
  await second.truncate(torn)
  await second.datasync()
  await second.close()
  for (const v of volumes.slice(0, 2)) zeroFrom(sim, file(v, 1), SEGMENT_HEADER_BYTES)
  await checkTornTailRebuild(t, dir, open, flushed, model, B)
  const a = sim.readFile(file(volumes[0], 0))!
  const b = sim.readFile(file(volumes[1], 0))!
  t.equal(a.length, torn, 'copy 1 was cut where the torn entry began')
  t.ok(a.subarray(SEGMENT_HEADER_BYTES).equals(b.subarray(SEGMENT_HEADER_BYTES)), 'the two copies hold the same log')
  // Copy 1's disk dies: copy 2 alone still serves the flushed image.
  await sim.remove(file(volumes[0], 0))
  const alone = await open()
  const image = await alone.read(0, SIZE)
  let bad = -1
  for (let at = 0; at < SIZE && bad < 0; at += B) {
    const got = image.subarray(at, at + B)
    if (!got.equals(flushed.subarray(at, at + B)) && !got.equals(model.subarray(at, at + B))) bad = at / B
  }
  t.equal(bad, -1, 'copy 2 alone reads every block as flushed (or later)')
  await alone.close()
})
