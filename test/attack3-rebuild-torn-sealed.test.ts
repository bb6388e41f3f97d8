import path from 'node:path'
import t, { type Test } from 'tap'
import { segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { scratchDir, writeRandom } from './helpers/sim-layer'
import { checkTornTailRebuild } from './helpers/torn-rebuild'

/**
 * A full rebuild (the index lost with the power) after a power loss that kept every page of
 * an unsynced sealed segment but one (SimFileLayer's `pages` crash model: a page cache writes
 * back in any order). A lost page mid-file reads "not an entry header"; before store format 3
 * the full-rebuild rule called it damage (only a file ending inside an entry, or a gap at the
 * next segment's start, read as a crash there): reported for ever by verify, and the next
 * segment's unflushed entries applied past the hole. Now the entries of the next segment
 * record how far a flush made the log durable (`durableSeq`), short of the missing entry: a
 * torn tail, cut there, the next segment moved aside.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'attack3-rebuild-sealed')

t.test('a sealed segment not yet synced, torn by a power loss mid-file (a lost page), index lost: a torn tail, not damage', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0x7043)
  const model = Buffer.alloc(SIZE)
  const write = (): Promise<void> => writeRandom(store, model, rng, 16)
  while (store.status().index.position % SEGMENT < 0.5 * SEGMENT) await write()
  await store.flush()
  const flushed = Buffer.from(model)
  const lostAt = store.status().index.position % SEGMENT // the first write after the flush
  while (Math.floor(store.status().index.position / SEGMENT) === 0) await write() // seals segment 0, unsynced
  for (let i = 0; i < 5; i++) await write() // into segment 1, unsynced
  await store.abandon()
  // The page cache wrote back every page but the one holding the first unflushed entry's
  // header: that page holds its durable bytes (flushed ones up to lostAt, zeros after).
  const pageEnd = (Math.floor(lostAt / 4096) + 1) * 4096
  sim.poke(path.join(dir, 'segments', segmentFileName(0)), lostAt, Buffer.alloc(pageEnd - lostAt))
  sim.crash(rng)
  await checkTornTailRebuild(t, dir, open, flushed, model, B)
})
