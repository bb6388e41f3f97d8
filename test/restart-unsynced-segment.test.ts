import t, { type Test } from 'tap'
import { MAINTENANCE_RESERVE_BYTES } from '../src/store/pass-fence'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { scratchDir, writeRandom } from './helpers/sim-layer'

/**
 * A segment made ahead of its roll has its directory's fsync left to its first sync
 * (next-segment.ts). When the process dies (kill -9: no power loss, the page cache stays)
 * after rolling into it and before any flush, the next open replays the segment and syncs its
 * data; the flushes after that open say its entries are durable, so the open must make the
 * segment's name durable too, or a power loss later drops the whole file (found by the
 * fdatasync-failure work: writeback-failure.test.ts).
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

// A power loss keeps each unsynced name or not (SimFileLayer.crash, even odds): 8 of them.
for (let round = 0; round < 8; round++) {
t.test(`entries in a segment made ahead survive a power loss after a restart and a flush (${round})`, async t => {
  const dir = scratchDir(t as Test, 'logdisk-restart-unsynced')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  let store = await open()
  const rng = new Rng(0xd1e + round)
  const model = Buffer.alloc(SIZE)
  const room = (): number => Math.floor((SEGMENT - MAINTENANCE_RESERVE_BYTES - store.status().index.position % SEGMENT - 64) / (B + 4))
  while (room() > 0) await writeRandom(store, model, rng, Math.min(16, room()))
  await store.flush()
  await writeRandom(store, model, rng, 16) // rolls into segment 1, made ahead
  t.equal(Math.floor(store.status().index.position / SEGMENT), 1, 'rolled into segment 1')
  await writeRandom(store, model, rng, 16)
  await store.abandon() // kill -9 before any flush
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'the restart reads every write')
  await store.flush()
  await store.abandon()
  sim.crash(rng)
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'after a power loss: every write the flush covered')
  await store.close()
})
}
