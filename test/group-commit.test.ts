import t, { type Test } from 'tap'
import { isLogdiskError } from '../src/errors'
import type { FileHandle, FileLayer } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, scratchDir } from './helpers/sim-layer'

/**
 * Group commit (log-appender.ts `write`/`commitGroup`): whole-block writes queued together
 * go into the log with one writev; each resolves only once all its entries are in the log
 * file; a flush covers every write resolved before it, and a power loss after a grouped
 * append but before its fdatasync loses only writes no flush acknowledged.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

const tmpDir = (t: Test): string => scratchDir(t, 'logdisk-group')

/** A file layer over SimFileLayer that counts data writevs and fails one chosen by a predicate. */
class CountingLayer extends PassThroughLayer {
  writevs: Array<{ file: string, position: number, bytes: number }> = []
  datasyncs = 0
  failWhen: ((file: string, position: number, bytes: number) => boolean) | undefined
  /** Awaited before a writev goes to the disk (to make writevs finish out of order). */
  beforeWritev: ((file: string, position: number, bytes: number) => Promise<void>) | undefined
  inFlight = 0
  maxInFlight = 0
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    const layer = this
    return new Proxy(h, {
      get (target, prop, receiver) {
        if (prop === 'datasync') {
          return async () => {
            layer.datasyncs++
            return target.datasync()
          }
        }
        if (prop === 'writev') {
          return async (buffers: Buffer[], position: number) => {
            const bytes = buffers.reduce((n, b) => n + b.length, 0)
            layer.writevs.push({ file, position, bytes })
            layer.maxInFlight = Math.max(layer.maxInFlight, ++layer.inFlight)
            try {
              await layer.beforeWritev?.(file, position, bytes)
              if (layer.failWhen?.(file, position, bytes)) {
                layer.failWhen = undefined
                throw Object.assign(new Error('EIO: injected'), { code: 'EIO' })
              }
              return await target.writev(buffers, position)
            } finally {
              layer.inFlight--
            }
          }
        }
        const v = Reflect.get(target, prop, receiver)
        return typeof v === 'function' ? v.bind(target) : v
      }
    })
  }

}

async function newStore (t: Test, layer: FileLayer, segmentBytes = SEGMENT): Promise<{ dir: string, store: Store }> {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes })
  const store = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  return { dir, store }
}

function blockOf (seed: number, n = 1): Buffer {
  return new Rng(seed).bytes(n * B)
}

t.test('concurrent whole-block writes share one writev and read back, also after reopen', async t => {
  const layer = new CountingLayer(new SimFileLayer())
  const { dir, store } = await newStore(t, layer)
  const segmentWrites = (): number => layer.writevs.length // only segments go through the layer
  const before = segmentWrites()
  const writes = []
  for (let i = 0; i < 16; i++) writes.push(store.write(i * 3 * B, blockOf(i)))
  await Promise.all(writes)
  const used = segmentWrites() - before
  t.ok(used <= 2, `16 concurrent writes took ${used} writevs (the first alone, the rest grouped)`)
  for (let i = 0; i < 16; i++) t.same(await store.read(i * 3 * B, B), blockOf(i), `block ${i * 3}`)
  await store.close()
  const again = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  for (let i = 0; i < 16; i++) t.same(await again.read(i * 3 * B, B), blockOf(i), `block ${i * 3} after reopen`)
  await again.close()
})

t.test('a later write of the same block in one group wins; an unaligned write keeps lock order', async t => {
  const { store } = await newStore(t, new SimFileLayer())
  const a = store.write(0, blockOf(1, 2))
  const b = store.write(B, blockOf(2))
  const c = store.write(100, Buffer.alloc(10, 7)) // unaligned: its own lock section, after a and b
  const d = store.write(0, blockOf(3)) // after c, in a new group
  await Promise.all([a, b, c, d])
  const got = await store.read(0, 2 * B)
  const want = Buffer.concat([blockOf(3), blockOf(2)])
  t.same(got, want)
  await store.close()
})

// Regression: a write whose entries went into two writevs (here: split by a segment roll)
// resolved after the first writev, so a failure of the second was reported as success.
t.test('a write split over two writevs fails if the second one fails', async t => {
  const layer = new CountingLayer(new SimFileLayer())
  const { store } = await newStore(t, layer)
  // Fill the first segment until less than 64 KiB is left.
  let block = 0
  while (store.status().index.position % SEGMENT < SEGMENT - 200 * 1024) {
    await store.write(block * B, blockOf(block, 16))
    block += 16
  }
  t.equal(store.status().segments.active, 0, 'still in the first segment')
  const big = blockOf(999, 64) // 256 KiB: does not fit the rest of the segment
  const offset = 1024 * B
  const writevsBefore = layer.writevs.length
  // The first data writev in the next segment (after its small header writev).
  layer.failWhen = (file, position, bytes) => file !== layer.writevs[writevsBefore].file && bytes > 16 * B
  // Two writes grouped: the first fits, the second is split by the roll.
  const small = store.write(2000 * B, blockOf(7))
  const split = store.write(offset, big)
  const results = await Promise.allSettled([small, split])
  t.equal(results[1].status, 'rejected', 'the split write reports the failed second writev')
  if (results[1].status === 'rejected') t.ok(isLogdiskError(results[1].reason, 'IO'), 'as IO')
  t.equal(store.status().segments.active, 1, 'the roll happened')
  // The store goes on.
  await store.write(offset, big)
  t.same(await store.read(offset, big.length), big)
  await store.close()
})

t.test('power loss after a grouped append and before its fdatasync loses only unflushed writes', async t => {
  for (let round = 0; round < 20; round++) {
    const sim = new SimFileLayer()
    const { dir, store } = await newStore(t, sim)
    const rng = new Rng(0x9c0 + round)
    // Acknowledged and flushed: a group of writes, then a flush.
    const flushed = new Map<number, Buffer>()
    const g1 = []
    for (let i = 0; i < 12; i++) {
      const b = rng.int(SIZE / B - 4)
      const data = rng.bytes(B * (1 + rng.int(3)))
      g1.push(store.write(b * B, data))
      for (let k = 0; k < data.length / B; k++) flushed.set(b + k, data.subarray(k * B, (k + 1) * B))
    }
    await Promise.all(g1)
    await store.flush()
    // A second group, appended (resolved) but never flushed, then power fails.
    const g2: Array<{ block: number, data: Buffer }> = []
    const p2 = []
    for (let i = 0; i < 12; i++) {
      const b = rng.int(SIZE / B - 4)
      const data = rng.bytes(B * (1 + rng.int(3)))
      g2.push({ block: b, data })
      p2.push(store.write(b * B, data))
    }
    await Promise.all(p2)
    await store.abandon()
    sim.crash(rng)
    const after = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
    const image = await after.read(0, SIZE)
    // Every block: its flushed version, or a version from the lost group (a prefix of it).
    const later = new Map<number, Buffer[]>()
    for (const w of g2) for (let k = 0; k < w.data.length / B; k++) later.set(w.block + k, [...(later.get(w.block + k) ?? []), w.data.subarray(k * B, (k + 1) * B)])
    let bad = -1
    for (let b = 0; b < SIZE / B && bad < 0; b++) {
      const got = image.subarray(b * B, (b + 1) * B)
      const ok = [flushed.get(b) ?? Buffer.alloc(B), ...(later.get(b) ?? [])].some(v => v.equals(got))
      if (!ok) bad = b
    }
    t.equal(bad, -1, `round ${round}: every block holds its flushed version or a lost-group version`)
    await after.close()
  }
})

t.test('flushes that arrive together share one fdatasync; writes go on while it runs', async t => {
  const layer = new CountingLayer(new SimFileLayer())
  const { store } = await newStore(t, layer)
  await store.write(0, blockOf(1))
  const before = layer.datasyncs
  const flushes = [store.flush(), store.flush(), store.flush(), store.flush(), store.flush()]
  // A write called while the flushes wait needs no lock they hold.
  const w = store.write(B, blockOf(2))
  await Promise.all([...flushes, w])
  // Regression: a flush called right after a write (not yet resolved) covers it, as it did
  // under the append lock (the first lock-free flush did not: crash-sim's segment-roll test hung).
  let wrote = false
  const w3 = store.write(2 * B, blockOf(3)).then(() => { wrote = true })
  await store.flush()
  t.ok(wrote, 'the flush resolved after the write called before it')
  await w3
  t.ok(layer.datasyncs - before <= 2, `5 flushes took ${layer.datasyncs - before} fdatasyncs`)
  await store.flush()
  t.same(await store.read(0, 2 * B), Buffer.concat([blockOf(1), blockOf(2)]))
  await store.close()
})

// A group of 1 MiB writes goes out as several writevs at once (log-appender.ts WRITEVS_IN_FLIGHT).
const BIG_SEGMENT = 6 * 1024 * 1024 + 64 * 1024
const MiB_BLOCKS = 256

/** Six 1 MiB writes called together: the first alone, the other five grouped (five writevs). */
function sixWrites (store: Store): Array<Promise<void>> {
  const writes = []
  for (let i = 0; i < 6; i++) writes.push(store.write(i * MiB_BLOCKS * B, blockOf(100 + i, MiB_BLOCKS)))
  return writes
}

t.test('writevs of a group run at once, finish out of order and land in log order', async t => {
  const layer = new CountingLayer(new SimFileLayer())
  const { dir, store } = await newStore(t, layer, BIG_SEGMENT)
  const big = (bytes: number): boolean => bytes > MiB_BLOCKS * B
  // The first writev of the group waits until every later one of the group is done.
  let firstOfGroup: (() => void) | undefined
  let bigSeen = 0
  layer.beforeWritev = async (_file, _position, bytes) => {
    if (!big(bytes)) return
    bigSeen++
    if (bigSeen === 2) await new Promise<void>(resolve => { firstOfGroup = resolve })
    if (bigSeen === 5) setImmediate(() => firstOfGroup?.())
  }
  const settled: number[] = []
  await Promise.all(sixWrites(store).map((p, i) => p.then(() => { settled.push(i) })))
  t.ok(layer.maxInFlight >= 3, `${layer.maxInFlight} writevs were in flight at once`)
  t.same(settled.slice(1, 3), [1, 2], 'writes resolve in log order although later writevs finished first')
  for (let i = 0; i < 6; i++) t.same(await store.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B), blockOf(100 + i, MiB_BLOCKS), `write ${i} reads back`)
  await store.close()
  const again = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  for (let i = 0; i < 6; i++) t.same(await again.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B), blockOf(100 + i, MiB_BLOCKS), `write ${i} after reopen`)
  await again.close()
})

// A failed writev with later ones of its group already written: those must not come back
// after a reopen (recovery would scan past the failed one's place if the bytes stayed).
t.test('a failed writev in the middle of a group fails it and the later writes, which do not come back after reopen', async t => {
  const layer = new CountingLayer(new SimFileLayer())
  const { dir, store } = await newStore(t, layer, BIG_SEGMENT)
  const big = (bytes: number): boolean => bytes > MiB_BLOCKS * B
  let bigSeen = 0
  let release: (() => void) | undefined
  const started = new Map<number, number>() // position -> which big writev (1-based)
  layer.beforeWritev = async (_file, position, bytes) => {
    if (!big(bytes)) return
    started.set(position, ++bigSeen)
    // The failing one (the third of the group) waits until the later ones are written.
    if (bigSeen === 4) await new Promise<void>(resolve => { release = resolve })
    if (bigSeen === 5) setImmediate(() => release?.())
  }
  layer.failWhen = (_file, position, bytes) => big(bytes) && started.get(position) === 4
  const results = await Promise.allSettled(sixWrites(store))
  t.same(results.map(r => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected'], 'the failed write and the later ones fail, the earlier ones stay written')
  const failed = results[3]
  if (failed.status === 'rejected') t.ok(isLogdiskError(failed.reason, 'IO'), 'as IO')
  const check = async (s: Store, when: string, third: Buffer = Buffer.alloc(MiB_BLOCKS * B)): Promise<void> => {
    for (let i = 0; i < 6; i++) {
      const want = i < 3 ? blockOf(100 + i, MiB_BLOCKS) : i === 3 ? third : Buffer.alloc(MiB_BLOCKS * B)
      t.same(await s.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B), want, `write ${i} ${i < 3 ? 'reads back' : 'never happened'} ${when}`)
    }
  }
  await check(store, 'at once')
  // The next append, of the failed one's size, goes where it was: had the later writevs'
  // bytes stayed in the file after it, a scan would read them as the entries that follow.
  await store.write(3 * MiB_BLOCKS * B, blockOf(7, MiB_BLOCKS))
  await store.flush()
  await store.abandon() // no clean close: the next open scans the log past its checkpoint
  const again = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  await check(again, 'after reopen', blockOf(7, MiB_BLOCKS))
  await again.close()
})
