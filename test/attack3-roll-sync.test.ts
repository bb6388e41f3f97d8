import path from 'node:path'
import t, { type Test } from 'tap'
import { segmentFileName } from '../src/store/format'
import type { FileHandle } from '../src/store/file-layer'
import { MAINTENANCE_RESERVE_BYTES } from '../src/store/pass-fence'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, scratchDir, withDatasync, writeRandom } from './helpers/sim-layer'

/**
 * A roll while a checkpoint's fdatasync of the segment being sealed is still running: that
 * fdatasync cleared `unsynced` when it began (Segment.sync), so the roll did not list the
 * segment among the sealed ones a flush syncs. A flush then returned before the segment's
 * writes were durable, and when that fdatasync failed, no later flush synced them at all.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'attack3-roll-sync')

/** A SimFileLayer whose next fdatasync of one file waits, then fails or goes on as told. */
class HoldLayer extends PassThroughLayer {
  held: { file: string, started: () => void, outcome: Promise<'ok' | 'EIO'> } | undefined
  /** fdatasyncs of each file that completed. */
  readonly synced = new Map<string, number>()

  hold (file: string, outcome: Promise<'ok' | 'EIO'>): Promise<void> {
    return new Promise(resolve => { this.held = { file: path.normalize(file), started: resolve, outcome } })
  }

  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    const name = path.normalize(file)
    return withDatasync(h, async () => {
      const held = this.held
      if (held !== undefined && held.file === name) {
        this.held = undefined
        held.started()
        if (await held.outcome === 'EIO') throw Object.assign(new Error(`EIO: fdatasync ${name}`), { code: 'EIO' })
      }
      await h.datasync()
      this.synced.set(name, (this.synced.get(name) ?? 0) + 1)
    })
  }

}

const currentId = (store: Store): number => Math.floor(store.status().index.position / SEGMENT)
const ticks = async (n: number): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(resolve => setImmediate(resolve)) }

for (const outcome of ['ok', 'EIO'] as const) {
  t.test(`a roll while a checkpoint's fdatasync of the sealed segment runs (it ends ${outcome}): a flush covers the sealed segment`, async t => {
    const dir = tmpDir(t)
    const sim = new SimFileLayer()
    const layer = new HoldLayer(sim)
    await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
    const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
    const store = await open()
    const rng = new Rng(0x5eed + (outcome === 'ok' ? 0 : 1))
    const model = Buffer.alloc(SIZE)
    const write = (blocks = 16): Promise<void> => writeRandom(store, model, rng, blocks)
    // Segment 0 filled until the next write does not fit: that write rolls at once.
    // Writes end before the maintenance reserve (pass-fence.ts).
    const room = (): number => Math.floor((SEGMENT - MAINTENANCE_RESERVE_BYTES - store.status().index.position % SEGMENT - 64) / (B + 4))
    while (room() > 0) await write(Math.min(16, room()))
    const seg0 = path.join(dir, 'segments', segmentFileName(0))
    let finish = (_: 'ok' | 'EIO'): void => {}
    const started = layer.hold(seg0, new Promise(resolve => { finish = resolve }))
    // The background checkpoint (its timer, or checkpointIfFull) syncs the log first.
    const checkpoint = store.checkpoint().then(() => 'ok', () => 'failed')
    await started
    await write() // rolls onto segment 1, nothing more written into segment 0
    t.equal(currentId(store), 1, 'rolled')
    let flushed = false
    const flush = store.flush().then(() => { flushed = true }, err => { flushed = true; return err as Error })
    await ticks(200)
    t.notOk(flushed, 'the flush waits for segment 0 to be durable')
    const syncsBefore = layer.synced.get(seg0) ?? 0
    finish(outcome)
    const first = await flush
    await checkpoint
    let durable = store
    if (outcome === 'ok') {
      t.equal(first, undefined, 'the flush succeeds')
      await store.flush()
    } else {
      // The failed fdatasync's pages may be gone from the kernel's cache unwritten: no later
      // flush may say they are durable (writeback-failure.test.ts), neither the one waiting
      // nor the next. A restart writes them again, and its flush makes them durable.
      t.match(first, { code: 'IO' }, 'the flush waiting for segment 0 fails')
      await t.rejects(store.flush(), { code: 'IO' }, 'and so does the next one')
      t.equal(layer.synced.get(seg0) ?? 0, syncsBefore, 'no fdatasync of segment 0 claimed it after the failure')
      await store.abandon()
      durable = await open()
      await durable.flush()
    }
    await durable.abandon()
    sim.crash(rng)
    const again = await open()
    t.ok((await again.read(0, SIZE)).equals(model), 'every byte written before the successful flush survives a power loss')
    await again.close()
  })
}
