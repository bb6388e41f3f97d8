import t, { type Test } from 'tap'
import { isLogdiskError } from '../src/errors'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { scratchDir } from './helpers/sim-layer'

/**
 * A failed fdatasync of the log (docs/FORMAT.md, open points; PostgreSQL's "fsyncgate"): Linux
 * reports a failed write-back once and marks the pages clean, so the next fdatasync succeeds
 * without writing them. SimFileLayer models that (the disk keeps a page's old bytes until a
 * write touches it again). The store must not let a later flush say those writes are durable,
 * in this process (every flush fails) or after the restart a user makes (recovery writes the
 * log's unflushed entries again before it syncs them).
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 2 * 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'logdisk-wbf')

async function setup (t: Test): Promise<{ sim: SimFileLayer, open: () => Promise<Store> }> {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  return { sim, open: () => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 }) }
}

t.test('after a failed fdatasync no flush succeeds until the store is opened again', async t => {
  const { sim, open } = await setup(t)
  const store = await open()
  const rng = new Rng(7)
  await store.write(0, rng.bytes(8 * B))
  await store.flush()
  await store.write(8 * B, rng.bytes(8 * B))
  sim.failNext('datasync', 'EIO')
  await t.rejects(store.flush(), { code: 'IO' }, 'the flush whose fdatasync failed fails')
  t.ok(store.writebackFailed, 'the store says a write-back failed')
  t.equal(store.status().writebackFailed, true, 'and so does its status (logdisk status warns)')
  await store.write(16 * B, rng.bytes(8 * B))
  const again = await store.flush().then(() => undefined, (err: unknown) => err)
  t.ok(isLogdiskError(again, 'IO'), 'a later flush fails too (its fdatasync would succeed without writing the lost pages)')
  t.match((again as Error).message, /earlier fdatasync .* failed .* unmount and mount the store again/, 'and says why and what to do')
  await store.close() // what unmount does: it must not fail, or the store stays locked
  const reopened = await open()
  t.equal(reopened.writebackFailed, false, 'the reopened store can flush again')
  t.notOk('writebackFailed' in reopened.status(), 'its status has no such field')
  await reopened.flush()
  await reopened.close()
})

t.test('the writes whose write-back failed survive a power loss after a restart and a flush', async t => {
  const { sim, open } = await setup(t)
  const model = Buffer.alloc(SIZE)
  const rng = new Rng(11)
  const write = async (store: Store, block: number, n: number): Promise<void> => {
    const data = rng.bytes(n * B)
    await store.write(block * B, data)
    data.copy(model, block * B)
  }
  let store = await open()
  await write(store, 0, 16)
  await store.flush()
  await write(store, 16, 16) // its pages' write-back fails: they stay in the cache, not on disk
  sim.failNext('datasync', 'EIO')
  await t.rejects(store.flush(), { code: 'IO' })
  // The daemon restarts; the page cache outlives it, so the reopen reads those writes.
  await store.abandon()
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'after the restart the image holds every write')
  await write(store, 40, 4)
  await store.flush() // says everything written so far is durable
  await store.abandon()
  sim.crash(new Rng(1))
  store = await open()
  const after = await store.read(0, SIZE)
  for (let b = 0; b < SIZE / B; b++) {
    if (!after.subarray(b * B, (b + 1) * B).equals(model.subarray(b * B, (b + 1) * B))) {
      t.fail(`block ${b} differs after the power loss: a flush said it was durable`)
      break
    }
  }
  t.ok(after.equals(model), 'after the power loss the image holds every write the last flush covered')
  await store.close()
})

t.test('a failed fdatasync of the cut after a failed append counts as one of a flush', async t => {
  // The cut (LogAppender.cutStale) truncates the bytes of the failed append and syncs the file:
  // when that fdatasync fails, the pages it left unwritten hold earlier appends no flush
  // covered yet (found by simulation seed 16200023).
  const { sim, open } = await setup(t)
  const model = Buffer.alloc(SIZE)
  const rng = new Rng(23)
  let store = await open()
  const write = async (block: number, n: number): Promise<void> => {
    const data = rng.bytes(n * B)
    await store.write(block * B, data)
    data.copy(model, block * B)
  }
  await write(0, 16)
  await store.flush()
  await write(16, 16) // not flushed yet
  sim.failNext('writev', 'ENOSPC')
  sim.failNext('datasync', 'EIO') // the cut's
  await t.rejects(store.write(64 * B, rng.bytes(8 * B)), { code: 'NO_SPACE' }, 'the append fails')
  t.ok(store.writebackFailed, 'the failed fdatasync of the cut counts')
  await t.rejects(store.flush(), { code: 'IO' }, 'so no flush says the earlier appends are durable')
  await store.close()
  store = await open()
  await store.flush()
  await store.abandon()
  sim.crash(new Rng(2))
  store = await open()
  t.ok((await store.read(0, SIZE)).equals(model), 'after a restart, a flush and a power loss: every write before the failed one')
  await store.close()
})
