import path from 'node:path'
import t from 'tap'
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { scratchDir, writeRandom } from './helpers/sim-layer'
import { checkTornTailRebuild } from './helpers/torn-rebuild'

/**
 * A full rebuild (the index lost with the power) after a power loss during a roll: the page
 * cache wrote back the new segment's entry pages but not its header page, and lost a page of
 * the last entry of the segment before (simulation seed 73028, PAGES=1 HOLD=4 REBUILDS=1).
 * The rebuild took the new segment, longer than a header, for the log's later end, so the
 * torn entry before it read as damage inside the log: indexed with bad blocks, and a block
 * whose last flushed version was intact read EIO. A header that never became durable makes
 * no end of the log: the one before ends it, its torn entry is cut.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

t.test('a roll torn by a power loss (entry pages of the new segment kept, its header lost), index lost: the torn entry before it is cut, not damage', async t => {
  const dir = scratchDir(t, 'rebuild-torn-roll')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0x7302)
  const model = Buffer.alloc(SIZE)
  const write = (): Promise<void> => writeRandom(store, model, rng, 16)
  while (store.status().index.position % SEGMENT < 0.7 * SEGMENT) await write()
  await store.flush()
  const flushed = Buffer.from(model)
  // Writes past the roll, unflushed (the index's position follows at its own pace: the
  // segment files say where the log is).
  const segment0 = path.join(dir, 'segments', segmentFileName(0))
  const segment1 = path.join(dir, 'segments', segmentFileName(1))
  while ((sim.readFile(segment1)?.length ?? 0) <= SEGMENT_HEADER_BYTES) await write()
  for (let i = 0; i < 4; i++) await write()
  await store.abandon()
  // What the disk holds after the power loss: the last page of segment 0 (inside its last
  // entry's blocks) never written back, segment 1's entries written back but not its header.
  const lastEnd = sim.readFile(segment0)!.length
  sim.poke(segment0, lastEnd - 4096, Buffer.alloc(4096))
  sim.poke(segment1, 0, Buffer.alloc(SEGMENT_HEADER_BYTES))
  await checkTornTailRebuild(t, dir, open, flushed, model, B)
})
