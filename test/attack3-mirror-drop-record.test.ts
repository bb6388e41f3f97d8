import path from 'node:path'
import t, { type Test } from 'tap'
import { IndexDb, type LevelDb } from '../src/store/index-db'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimHome } from '../src/testing/sim-home'
import { MemoryLevel } from 'memory-level'
import { scratchDir, writeRandom } from './helpers/sim-layer'

/**
 * A copy of a mirrored segment dropped after a failed write must be recorded durably before
 * the next flush returns (segment-table.ts recordDrops): else a restart reads the copy that
 * fell behind as if it were current. A checkpoint's recordDrops takes the pending records and
 * writes them; a flush running meanwhile found nothing left to record and returned at once,
 * before they were written (and when that write failed, nothing had recorded the drop at all).
 */
const B = 4096
const SIZE = 4 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'attack3-mirror-drop')

t.test('a flush while a checkpoint records a dropped copy: the flush returns only once the drop is durable', async t => {
  const dir = tmpDir(t)
  const sim = new SimFileLayer()
  const rng = new Rng(0xd209)
  const home = new SimHome(path.join(dir, 'pool'), rng, 2, 100, 2)
  // One LevelDB that survives reopens (kill -9 keeps what LevelDB wrote), with a gate on commits.
  const level = new MemoryLevel({ keyEncoding: 'buffer', valueEncoding: 'buffer' })
  let hold: { entered: () => void, outcome: Promise<boolean> } | undefined
  const gate = async (label: string): Promise<void> => {
    const h = hold
    if (h === undefined || label !== 'index.commit') return
    hold = undefined
    h.entered()
    if (!await h.outcome) throw Object.assign(new Error('EIO: index write'), { code: 'EIO' })
  }
  const openIndex = async (): Promise<IndexDb> => {
    if (level.status === 'closed') await level.open()
    return IndexDb.openLevel(level as unknown as LevelDb, gate)
  }
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, home, openIndex, checkpointIntervalMs: 0 })
  const store = await open()
  const model = Buffer.alloc(SIZE)
  const write = (): Promise<void> => writeRandom(store, model, rng, 16)
  for (let i = 0; i < 5; i++) await write()
  await store.flush()
  await store.checkpoint()
  const volumes = store.volumesOf(0)!
  t.equal(volumes.length, 2, 'segment 0 has two copies')
  sim.failNext('writev', 'EIO') // the first copy's write fails: it is dropped
  await write()
  t.equal(store.volumesOf(0)!.length, 1, 'one copy dropped')
  // The background checkpoint takes the drop's record to LevelDB, slowly.
  let entered = (): void => {}
  let outcome = (_: boolean): void => {}
  const inCommit = new Promise<void>(resolve => { entered = resolve })
  hold = { entered, outcome: new Promise<boolean>(resolve => { outcome = resolve }) }
  const checkpoint = store.checkpoint().then(() => true, () => false)
  await inCommit
  await write()
  let flushed: boolean | undefined
  const flush = store.flush().then(() => { flushed = true }, () => { flushed = false })
  for (let i = 0; i < 100; i++) await new Promise(resolve => setImmediate(resolve))
  t.equal(flushed, undefined, 'the flush waits for the drop record being written')
  outcome(false) // that index write fails
  await flush
  await checkpoint
  if (flushed === true) {
    // Acknowledged: every write so far must survive a kill -9 now.
    await store.abandon()
    const again = await open()
    t.ok((await again.read(0, SIZE)).equals(model), 'every flushed byte reads back after a kill -9')
    await again.close()
  } else {
    t.pass('the flush failed, as the drop is not recorded')
    await store.close()
  }
})
