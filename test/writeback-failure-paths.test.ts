import path from 'node:path'
import t, { type Test } from 'tap'
import { MemoryLevel } from 'memory-level'
import type { FileHandle } from '../src/store/file-layer'
import { IndexDb, type LevelDb } from '../src/store/index-db'
import { PENDING_HEADERS_FILE } from '../src/store/pending-headers'
import { Store } from '../src/store/store'
import { WritebackGuard } from '../src/store/writeback-guard'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimHome } from '../src/testing/sim-home'
import { PassThroughLayer, failingHandle, scratchDir } from './helpers/sim-layer'

/**
 * A failed fdatasync outside the log's own flush (writeback-failure.test.ts has the flush):
 * Linux marks the pages of a failed write-back clean, so whoever syncs the file next is told
 * it worked. A flush beside the cut's failed fdatasync (seed 16400056), the checkpoint that
 * records a dropped mirror copy (16400036) and a baseline merge (16500117) met one in the
 * simulation; compaction's free headers and a flush that fails after dropping a copy were
 * found reading the code around them.
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'logdisk-wbp')

t.test('the guard keeps a failed fdatasync for every later one of the file, until its pages are gone', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  const layer = new WritebackGuard(sim).layer
  await layer.mkdirp(dir)
  const file = path.join(dir, 'f')
  const a = await layer.open(file, true)
  await a.writev([Buffer.alloc(B, 1)], 0)
  sim.failNext('datasync', 'EIO')
  await t.rejects(a.datasync(), /EIO/, 'the failing fdatasync fails')
  await t.rejects(a.datasync(), /earlier fdatasync .* failed/, 'the next one on the same handle fails')
  const b = await layer.open(file, false)
  await t.rejects(b.datasync(), /earlier fdatasync .* failed/, 'and one on another handle of the file')
  await layer.rename(file, `${file}.2`)
  const c = await layer.open(`${file}.2`, false)
  await t.rejects(c.datasync(), /earlier fdatasync/, 'a rename takes the failure along')
  await c.truncate(0)
  await c.datasync()
  t.pass('truncated to nothing, the file syncs again')
  const d = await layer.open(file, true)
  await d.datasync()
  t.pass('a new file under the old name is a new file')
  // Two at once on one file: Linux tells only one of them (the error is reported once per
  // open file), though the pages lost may be the other's too.
  const e = await layer.open(file, false)
  await e.writev([Buffer.alloc(B, 2)], 0)
  sim.failNext('datasync', 'EIO')
  const [first, second] = await Promise.allSettled([e.datasync(), d.datasync()])
  t.equal(first.status, 'rejected', 'the failing one fails')
  t.equal(second.status, 'rejected', 'the one beside it fails too')
  for (const h of [a, b, c, d, e]) await h.close()
})

t.test('after compaction\'s fdatasync of free headers failed, no later one is trusted until the store is opened again', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  let onPublish: (() => void) | undefined
  // Once compaction has published its pending headers, its next fdatasync is the one of the
  // free headers it writes into a sealed segment.
  class Layer extends PassThroughLayer {
    override async rename (from: string, to: string): Promise<void> {
      await super.rename(from, to)
      if (path.basename(to) === PENDING_HEADERS_FILE) onPublish?.()
    }
  }
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: new Layer(sim), checkpointIntervalMs: 0, historyKeepMs: 0 })
  const rng = new Rng(0x5ee)
  const model = Buffer.alloc(SIZE)
  let store = await open()
  // Blocks 0-63 written twice over a full segment: the first versions, sealed, are dead.
  for (let round = 0; round < 6; round++) {
    const data = rng.bytes(64 * B)
    await store.write(0, data)
    data.copy(model)
  }
  await store.flush()
  await store.checkpoint()
  onPublish = () => { onPublish = undefined; sim.failNext('datasync', 'EIO') }
  await t.rejects(store.compact(), /EIO/, 'the compaction whose fdatasync failed fails')
  t.equal(onPublish, undefined, 'the fault hit the free headers\' fdatasync')
  // The retry writes its free headers again and syncs: the kernel would say yes without
  // writing the pages whose write-back failed (those of the first attempt it does not rewrite).
  await t.rejects(store.compact(), /earlier fdatasync .* failed .* unmount and mount the store again/, 'the next compaction fails and says what to do')
  await store.close()
  store = await open()
  await store.compact()
  t.ok((await store.verify()).ok, 'after a restart compaction runs and verify is clean')
  await store.abandon()
  sim.crash(new Rng(3))
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'after a power loss every write reads back')
  t.ok((await store.verify()).ok, 'and verify is clean')
  await store.close()
})

async function mirroredStore (t: Test, layer: PassThroughLayer): Promise<{ open: () => Promise<Store> }> {
  const dir = tmpDir(t)
  const home = new SimHome(path.join(dir, 'pool'), new Rng(5), 2, 100, 2)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, layer.sim)
  return { open: () => Store.open(dir, { fileLayer: layer, home, checkpointIntervalMs: 0 }) }
}

/** Writes until the log rolls into segment 1, leaving segment 0 sealed and unsynced. */
async function fillFirstSegment (store: Store): Promise<void> {
  const rng = new Rng(9)
  for (let block = 0; store.volumesOf(1) === undefined; block = (block + 16) % (SIZE / B)) await store.write(block * B, rng.bytes(16 * B))
}

t.test('a copy dropped in a flush that then fails is on record for the next open', async t => {
  let failCurrent = false
  class Layer extends PassThroughLayer {
    override async open (file: string, create: boolean): Promise<FileHandle> {
      const h = await super.open(file, create)
      return /seg-0+1\.log$/.test(file) ? failingHandle(h, 'datasync', () => failCurrent, 'EIO: fdatasync (test)') : h
    }
  }
  const layer = new Layer(new SimFileLayer())
  const { open } = await mirroredStore(t, layer)
  const store = await open()
  await fillFirstSegment(store)
  t.equal(store.volumesOf(0)?.length, 2, 'segment 0 has two copies')
  layer.sim.failNext('datasync', 'EIO') // segment 0's first copy: dropped, the other synced
  failCurrent = true // segment 1 (current): no copy syncs, so the flush fails
  await t.rejects(store.flush(), /EIO/)
  t.equal(store.volumesOf(0)?.length, 1, 'the copy is dropped')
  failCurrent = false
  await store.close()
  const again = await open()
  t.equal(again.volumesOf(0)?.length, 1, 'the next open does not read the dropped copy again (its disk may hold old bytes the page cache hid)')
  await again.close()
})

t.test('a checkpoint that drops a copy while it syncs does not write the copy back into the record', async t => {
  const layer = new PassThroughLayer(new SimFileLayer())
  const { open } = await mirroredStore(t, layer)
  const store = await open()
  await fillFirstSegment(store) // the roll staged segment 0's record (two copies)
  layer.sim.failNext('datasync', 'EIO') // the checkpoint's sync drops segment 0's first copy
  await store.checkpoint()
  t.equal(store.volumesOf(0)?.length, 1, 'the copy is dropped')
  await store.abandon()
  const again = await open()
  t.equal(again.volumesOf(0)?.length, 1, 'the record the checkpoint wrote names one copy')
  await again.close()
})

t.test('a copy dropped by compaction\'s fdatasync is on record before its pending headers go', async t => {
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  const openIndex = async (): Promise<IndexDb> => IndexDb.openLevel(level as unknown as LevelDb)
  let recorded: string[] | undefined
  let live: string[] | undefined
  let store: Store | undefined
  class Layer extends PassThroughLayer {
    override async rename (from: string, to: string): Promise<void> {
      await super.rename(from, to)
      // The free headers' fdatasync comes next: it fails on the first copy alone.
      if (path.basename(to) === PENDING_HEADERS_FILE) this.sim.failNext('datasync', 'EIO')
    }

    override async remove (file: string): Promise<void> {
      // What a kill -9 right after the pending headers went would leave on record.
      if (path.basename(file) === PENDING_HEADERS_FILE && recorded === undefined) {
        recorded = (await (await openIndex()).segments()).get(0)?.volumes
        live = store?.volumesOf(0)
      }
      return super.remove(file)
    }
  }
  const dir = tmpDir(t)
  const layer = new Layer(new SimFileLayer())
  const home = new SimHome(path.join(dir, 'pool'), new Rng(5), 2, 100, 2)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, layer.sim)
  store = await Store.open(dir, { fileLayer: layer, home, openIndex, checkpointIntervalMs: 0, historyKeepMs: 0 })
  const rng = new Rng(13)
  while (store.volumesOf(1) === undefined) await store.write(0, rng.bytes(64 * B)) // segment 0 holds dead versions
  await store.flush()
  await store.checkpoint()
  t.equal(store.volumesOf(0)?.length, 2, 'segment 0 has two copies')
  await store.compact()
  t.equal(live?.length, 1, 'the copy whose fdatasync failed was dropped')
  t.same(recorded, live, 'and on record when the pending headers were removed')
  await store.close()
})

t.test('after the baseline\'s fdatasync failed, no merge succeeds until the store is opened again; flushes still do', async t => {
  let arm = false
  class Layer extends PassThroughLayer {
    override async open (file: string, create: boolean): Promise<FileHandle> {
      const h = await super.open(file, create)
      if (path.basename(file) !== 'baseline.img') return h
      const sim = this.sim
      return new Proxy(h, {
        get (target, prop, receiver) {
          if (prop !== 'datasync') return Reflect.get(target, prop, receiver)
          return async () => {
            if (arm) { arm = false; sim.failNext('datasync', 'EIO') }
            return target.datasync()
          }
        }
      })
    }
  }
  const dir = tmpDir(t)
  const layer = new Layer(new SimFileLayer())
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, layer.sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0, historyKeepMs: 0 })
  const rng = new Rng(0xba5e)
  const model = Buffer.alloc(SIZE)
  let store = await open()
  const write = async (block: number, n: number): Promise<void> => {
    const data = rng.bytes(n * B)
    await store.write(block * B, data)
    data.copy(model, block * B)
  }
  for (let round = 0; round < 6; round++) await write(0, 64)
  await store.flush()
  arm = true
  await t.rejects(store.compactIntoBaseline(), /EIO/, 'the merge whose fdatasync failed fails')
  t.notOk(arm, 'the fault hit the baseline\'s fdatasync')
  t.ok(store.writebackFailed, 'the store says a write-back failed')
  t.equal(store.status().writebackFailed, true, 'so does its status')
  await write(64, 16)
  await store.flush()
  t.pass('the log\'s flushes still work')
  await t.rejects(store.compactIntoBaseline(), /earlier fdatasync .*baseline\.img failed .* unmount and mount the store again/, 'the next merge fails and says what to do')
  await store.close()
  store = await open()
  t.notOk(store.writebackFailed, 'the reopened store has no failed write-back')
  await store.compactIntoBaseline()
  t.ok((await store.verify()).ok, 'a merge after the restart works and verify is clean')
  await store.abandon()
  layer.sim.crash(new Rng(4))
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'after a power loss every write reads back')
  t.ok((await store.verify()).ok, 'and verify is clean')
  await store.close()
})
