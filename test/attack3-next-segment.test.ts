import path from 'node:path'
import t, { type Test } from 'tap'
import { segmentFileName } from '../src/store/format'
import type { FileHandle } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, scratchDir, writeRandom } from './helpers/sim-layer'

/**
 * Hostile tests of the segment made ahead of its roll (next-segment.ts), on the simulated disk.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'attack3-next-segment')

/** A SimFileLayer whose next create-open of one path waits until released. */
class GatedLayer extends PassThroughLayer {
  private gate: { file: string, opened: () => void, release: Promise<void> } | undefined

  /** The next open(file, create) waits for `release`; resolves once that open has been called. */
  hold (file: string, release: Promise<void>): Promise<void> {
    return new Promise(resolve => { this.gate = { file: path.normalize(file), opened: resolve, release } })
  }

  async open (file: string, create: boolean): Promise<FileHandle> {
    const g = this.gate
    if (g !== undefined && create && path.normalize(file) === g.file) {
      this.gate = undefined
      g.opened()
      await g.release
    }
    return this.sim.open(file, create)
  }

}

const currentId = (store: Store): number => Math.floor(store.status().index.position / SEGMENT)

t.test('a drain discarding the segment made ahead while it is still being made, and a roll meanwhile: flushed writes survive', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  const layer = new GatedLayer(sim)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0xa77ac3)
  const model = Buffer.alloc(SIZE)
  const write = (): Promise<void> => writeRandom(store, model, rng, 16)
  // Segment 1's making ahead (it starts once segment 0 is half full) stalls in its open: a
  // slow disk (the commit measured 50-220 ms per segment made).
  let release = (): void => {}
  const opened = layer.hold(path.join(dir, 'segments', segmentFileName(1)), new Promise<void>(resolve => { release = resolve }))
  while (store.status().index.position % SEGMENT < 0.6 * SEGMENT) await write()
  await opened
  // A pool drain begins (Pool.drain calls this first), and writers go on meanwhile.
  const discarded = store.discardNextSegment()
  const writers = (async () => {
    while (currentId(store) === 0) await write()
    for (let i = 0; i < 10; i++) await write()
    await store.flush()
  })()
  // The making ahead resumes a while later (writes may roll meanwhile, or wait for it).
  for (let i = 0; i < 200; i++) await new Promise(resolve => setImmediate(resolve))
  release()
  await writers
  t.equal(currentId(store), 1, 'rolled onto segment 1')
  t.equal(await discarded, true, 'the drain removed the segment made ahead')
  await store.flush()
  t.ok(sim.files().includes(path.join(dir, 'segments', segmentFileName(1))), 'the current segment\'s file is still there')
  t.ok((await store.read(0, SIZE)).equals(model), 'every acknowledged byte reads back')
  await store.close()
  const again = await open()
  t.ok((await again.read(0, SIZE)).equals(model), 'every flushed byte reads back after a reopen')
  t.ok((await again.verify()).ok, 'verify clean')
  await again.close()
})
