import path from 'node:path'
import t from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, fillSegment, scratchDir, tagBlock, withDatasync } from './helpers/sim-layer'

/**
 * A sync (a flush, an index checkpoint) makes durable what was written before it was called,
 * and stops there. It used to sync sealed segments until none was left, so a writer that
 * sealed segments as fast as they were synced kept it going: under sequential writes a
 * checkpoint's sync ran 1.0-1.4 s instead of ~0.1 s, the index batch reached its bound
 * meanwhile and every write waited 0.6-0.8 s, every 1.3 s (fio p99.9 0.8 s); an fsync from
 * the image could wait as long as writes kept coming.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

/** Counts fdatasyncs of segment files; after each one, runs `afterSync` (a writer racing the sync). */
class RacingLayer extends PassThroughLayer {
  segmentSyncs = 0
  afterSync: (() => Promise<void>) | undefined

  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    const isSegment = path.basename(path.dirname(file)) === 'segments'
    return withDatasync(h, async () => {
      await h.datasync()
      if (!isSegment) return
      this.segmentSyncs++
      await this.afterSync?.()
    })
  }
}

t.test('a flush syncs up to the segment current when it was called, not the ones sealed while it runs', async t => {
  const dir = scratchDir(t, 'sync-bounded')
  const sim = new SimFileLayer()
  const layer = new RacingLayer(sim)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  const store = await open()
  // Blocks 0-199 written until segment 0 is sealed (not synced: a roll does not sync), then
  // one more block in segment 1: the flush must make all of it durable.
  await fillSegment(store, 0, 'before')
  await store.write(300 * B, tagBlock('last-before-flush', B))
  const expected = await store.read(0, 400 * B)

  // Each segment fdatasync from here on lets a writer fill and seal one more segment (blocks
  // 1000-1199), up to 8 times: what a sequential writer does while a sync runs.
  let racingRolls = 0
  layer.afterSync = async () => {
    if (racingRolls >= 8) return
    racingRolls++
    await fillSegment(store, 1000, `racing${racingRolls}-`)
  }
  layer.segmentSyncs = 0
  await store.flush()
  const syncs = layer.segmentSyncs
  layer.afterSync = undefined
  // Segment 0 (sealed before the call) and segment 1 (current at the call, sealed by the
  // racing writer while segment 0 was synced); not the segments sealed after.
  t.equal(syncs, 2, 'the flush synced the two segments that held what was written before it')
  t.ok(racingRolls < 8, `the racing writer did not keep the flush going (${racingRolls} rolls)`)
  t.ok(store.status().segments.active >= 2, 'segments sealed meanwhile stay for the next sync')

  await store.abandon() // kill -9, then a power loss: only what a sync covered is sure to be there
  sim.crash(new Rng(7))
  const again = await open()
  t.ok((await again.read(0, 400 * B)).equals(expected), 'everything written before the flush survives a power loss')
  // The next flush covers the segments the first one left.
  const late = await again.read(1000 * B, 200 * B)
  await again.flush()
  await again.abandon()
  sim.crash(new Rng(8))
  const third = await open()
  t.ok((await third.read(1000 * B, 200 * B)).equals(late), 'and the next flush covers what was written after it')
  await third.close()
})
