import path from 'node:path'
import t, { type Test } from 'tap'
import { isLogdiskError } from '../src/errors'
import type { FileHandle, FileLayer } from '../src/store/file-layer'
import { crc32c } from '../src/store/crc'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimHome } from '../src/testing/sim-home'
import { PassThroughLayer, scratchDir } from './helpers/sim-layer'

/**
 * Group commit with several writevs in flight (log-appender.ts WRITEVS_IN_FLIGHT) against
 * power loss and failures: a later writev may reach the disk while an earlier one does not
 * (or only partly), and a failed writev may leave later, complete entries past the tail.
 * Whatever happens, recovery returns for every block its flushed version or a newer written
 * one, never CORRUPT, never bytes of a write that failed.
 */
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 6 * 1024 * 1024 + 64 * 1024
const MiB_BLOCKS = 256

const tmpDir = (t: Test): string => scratchDir(t, 'logdisk-gcc')

function blockOf (seed: number, n = 1): Buffer {
  return new Rng(seed).bytes(n * B)
}

/** A file layer over SimFileLayer whose segment writevs can be held back and truncates failed. */
class OrderLayer extends PassThroughLayer {
  /** Awaited before a big writev goes to the disk; gets its 1-based number among big writevs. */
  beforeBig: ((n: number, position: number) => Promise<void>) | undefined
  failBig: ((n: number) => boolean) | undefined
  failTruncates = 0
  big = 0
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    const layer = this
    return new Proxy(h, {
      get (target, prop, receiver) {
        if (prop === 'writev') {
          return async (buffers: Buffer[], position: number) => {
            const bytes = buffers.reduce((n, b) => n + b.length, 0)
            if (bytes > MiB_BLOCKS * B) {
              const n = ++layer.big
              await layer.beforeBig?.(n, position)
              if (layer.failBig?.(n) === true) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' })
            }
            return target.writev(buffers, position)
          }
        }
        if (prop === 'truncate') {
          return async (length: number) => {
            if (layer.failTruncates > 0) {
              layer.failTruncates--
              throw Object.assign(new Error('EIO: injected truncate'), { code: 'EIO' })
            }
            return target.truncate(length)
          }
        }
        const v = Reflect.get(target, prop, receiver)
        return typeof v === 'function' ? v.bind(target) : v
      }
    })
  }

}

/** An rng for SimFileLayer.crash that keeps every unsynced operation and tears the last one `short` bytes short. */
function tearLast (short: number): Rng {
  const rng = new Rng(1)
  let tearing = false
  rng.int = (n: number) => {
    if (tearing) { tearing = false; return n - short }
    return n - 1
  }
  rng.chance = () => { tearing = true; return true }
  return rng
}

async function newStore (t: Test, layer: FileLayer, segmentBytes = SEGMENT): Promise<{ dir: string, store: Store }> {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes })
  const store = await Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 })
  return { dir, store }
}

/** Reads each 1 MiB region; returns 'old', 'new', or what else it found. */
async function regionState (store: Store, i: number, old: Buffer, now: Buffer): Promise<string> {
  try {
    const got = await store.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B)
    return got.equals(old) ? 'old' : got.equals(now) ? 'new' : 'wrong bytes'
  } catch (err) {
    return isLogdiskError(err, 'CORRUPT') ? 'CORRUPT' : `error ${(err as Error).message}`
  }
}

// Three 1 MiB writes at once: the first alone, the other two one group of two writevs in
// flight together. The group's first writev (A) reaches the disk only after the second (B);
// power fails with B whole and A torn (its last bytes missing). A and B were never flushed:
// each may be lost, but A's blocks must read their flushed version, never CORRUPT (before
// the fix, recovery took torn A, followed by a valid B, for damage inside the log and kept
// it: its last block's flushed version was gone, the read failed CORRUPT).
t.test('power loss with a later writev of a group on disk and an earlier one torn: the torn one is cut, flushed data stays', async t => {
  for (const short of [1, 3000, 300 * 1024]) {
    const sim = new SimFileLayer()
    const layer = new OrderLayer(sim)
    const { dir, store } = await newStore(t, layer)
    const old = [0, 1, 2].map(i => blockOf(10 + i, MiB_BLOCKS))
    const now = [0, 1, 2].map(i => blockOf(20 + i, MiB_BLOCKS))
    for (let i = 0; i < 3; i++) await store.write(i * MiB_BLOCKS * B, old[i])
    await store.flush()
    let releaseA: (() => void) | undefined
    layer.big = 0
    layer.beforeBig = async (n) => {
      if (n === 2) await new Promise<void>(resolve => { releaseA = resolve }) // A waits for B
      if (n === 3) setImmediate(() => releaseA?.())
    }
    await Promise.all([0, 1, 2].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
    t.equal(layer.big, 3, 'three big writevs')
    await store.abandon()
    sim.crash(tearLast(short))
    const after = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
    const states = []
    for (let i = 0; i < 3; i++) states.push(await regionState(after, i, old[i], now[i]))
    t.ok(states.every(s => s === 'old' || s === 'new'), `short ${short}: every region reads its flushed or its new version (${states.join(', ')})`)
    t.equal(states[1], 'old', `short ${short}: the torn write is lost whole`)
    t.equal(states[2], 'old', `short ${short}: nothing after the torn write is kept (the log is a prefix)`)
    // The log goes on where it was cut, and a reopen sees the same.
    await after.write(MiB_BLOCKS * B, blockOf(30, MiB_BLOCKS))
    await after.flush()
    await after.abandon()
    const again = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
    t.equal(await regionState(again, 1, old[1], blockOf(30, MiB_BLOCKS)), 'new', `short ${short}: the write after the cut survives`)
    t.equal(await regionState(again, 2, old[2], now[2]), 'old', `short ${short}: the stale writev never comes back`)
    t.same((await again.verify()).problems, [], 'verify is clean')
    await again.close()
  }
})

// Mirrored segments (two copies): two writevs of one group in flight fail each on another
// copy. Each alone would drop its failed copy and succeed on the other; both together must
// not drop both copies (before the fix, both writes were acknowledged with no copy left, and
// every later write and flush "succeeded" writing nothing: a flushed write was lost).
t.test('two writevs in flight failing on different mirror copies never leave a write acknowledged on no copy', async t => {
  const sim = new SimFileLayer()
  const positions: number[] = []
  const layer = new OrderLayer(sim)
  const failOn = new Map<number, string>() // index of the position among big writevs -> volume
  const origOpen = layer.open.bind(layer)
  layer.open = async (file: string, create: boolean) => {
    const h = await origOpen(file, create)
    const writev = h.writev.bind(h)
    return Object.assign(Object.create(h) as FileHandle, {
      writev: async (buffers: Buffer[], position: number) => {
        const bytes = buffers.reduce((n, b) => n + b.length, 0)
        if (bytes > MiB_BLOCKS * B) {
          if (!positions.includes(position)) positions.push(position)
          const volume = failOn.get(positions.indexOf(position))
          if (volume !== undefined && file.includes(`/${volume}/`)) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' })
        }
        return writev(buffers, position)
      },
      read: h.read.bind(h),
      datasync: h.datasync.bind(h),
      truncate: h.truncate.bind(h),
      size: h.size.bind(h),
      close: h.close.bind(h)
    })
  }
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const home = new SimHome(path.join(dir, 'pool'), new Rng(5), 2, 100, 2)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, home, checkpointIntervalMs: 0 })
  const store = await open()
  const old = [0, 1, 2].map(i => blockOf(40 + i, MiB_BLOCKS))
  const now = [0, 1, 2].map(i => blockOf(50 + i, MiB_BLOCKS))
  for (let i = 0; i < 3; i++) await store.write(i * MiB_BLOCKS * B, old[i])
  await store.flush()
  positions.length = 0
  failOn.set(1, 'v0') // the group's first writev fails on v0
  failOn.set(2, 'v1') // its second on v1
  const results = await Promise.allSettled([0, 1, 2].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
  t.equal(positions.length, 3, 'three big writevs')
  failOn.clear()
  const status = results.map(r => r.status)
  t.comment(`writes: ${status.join(', ')}`)
  t.equal(status[0], 'fulfilled', 'the write before the group')
  const flushed = await store.flush().then(() => true, () => false)
  t.ok(flushed, 'the flush succeeds on the copy left')
  await store.abandon()
  sim.crash(new Rng(9))
  const again = await open()
  for (let i = 0; i < 3; i++) {
    const state = await regionState(again, i, old[i], now[i])
    if (flushed && status[i] === 'fulfilled') t.equal(state, 'new', `write ${i} was acknowledged and flushed: it survives`)
    else t.ok(state === 'old' || state === 'new', `write ${i} (${status[i]}): old or new (${state})`)
  }
  await again.close()
})

// A failed writev of a group whose later writev was written whole, and the cut back to the
// tail fails too: the later writev's entries stay in the file past the tail, with the
// sequence numbers the next appends take. The next append of the failed one's size ends
// right where they begin, so a scan from there (any reopen, even after a clean close) would
// read them as the entries that follow: the rejected write came back. Before the fix the
// failed cut was ignored; now the cut is retried before anything else is appended (and the
// append fails while it cannot be made).
t.test('a failed writev whose cut back to the tail fails too: the rejected later writev never comes back', async t => {
  for (const [close, truncateFails] of [['clean', 1], ['abandon', 1], ['clean', 2]] as const) {
    const sim = new SimFileLayer()
    const layer = new OrderLayer(sim)
    const { dir, store } = await newStore(t, layer)
    const old = [0, 1, 2].map(i => blockOf(60 + i, MiB_BLOCKS))
    const now = [0, 1, 2].map(i => blockOf(70 + i, MiB_BLOCKS))
    for (let i = 0; i < 3; i++) await store.write(i * MiB_BLOCKS * B, old[i])
    await store.flush()
    let releaseA: (() => void) | undefined
    layer.big = 0
    layer.beforeBig = async (n) => {
      if (n === 2) await new Promise<void>(resolve => { releaseA = resolve }) // A fails once B is written
      if (n === 3) setImmediate(() => releaseA?.())
    }
    layer.failBig = n => n === 2
    layer.failTruncates = truncateFails
    const results = await Promise.allSettled([0, 1, 2].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
    t.same(results.map(r => r.status), ['fulfilled', 'rejected', 'rejected'], 'A and B fail')
    layer.beforeBig = undefined
    layer.failBig = undefined
    // The next append, of A's size, goes to A's place and ends where B's bytes begin.
    const again1 = blockOf(80, MiB_BLOCKS)
    if (truncateFails > 1) await t.rejects(store.write(MiB_BLOCKS * B, again1), { code: 'IO' }, 'no append while the cut fails')
    await store.write(MiB_BLOCKS * B, again1)
    await store.flush()
    t.equal(await regionState(store, 2, old[2], now[2]), 'old', `${close}: B is not there at once`)
    if (close === 'clean') await store.close()
    else await store.abandon()
    const reopened = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
    t.equal(await regionState(reopened, 0, old[0], now[0]), 'new', `${close}: the write before the group`)
    t.equal(await regionState(reopened, 1, old[1], again1), 'new', `${close}: the write after the failure`)
    t.equal(await regionState(reopened, 2, old[2], now[2]), 'old', `${close}: the rejected write B never comes back`)
    await reopened.close()
  }
})

// Mirrored segments: the group's first writev fails on one copy while its second writev is
// still pending on that copy. The failed copy is dropped, and its handle closed: with raw fds
// (file-layer.ts), a close while a writev on the fd is still queued lets that writev run on
// whatever file next gets the fd number. Before the fix the handle was closed at once; now
// a dropped copy's handle closes once its operations in flight are done.
t.test('a mirror copy dropped while a later writev of the group is in flight on it is closed only after that writev', async t => {
  const sim = new SimFileLayer()
  const layer = new OrderLayer(sim)
  const positions: number[] = []
  const violations: string[] = []
  const origOpen = layer.open.bind(layer)
  layer.open = async (file: string, create: boolean) => {
    const h = await origOpen(file, create)
    let pending = 0
    let closed = false
    const track = async <T>(what: string, op: () => Promise<T>): Promise<T> => {
      if (closed) violations.push(`${what} on ${file} after close`)
      pending++
      try { return await op() } finally { pending-- }
    }
    return {
      writev: (buffers: Buffer[], position: number) => track('writev', async () => {
        const bytes = buffers.reduce((n, b) => n + b.length, 0)
        if (bytes > MiB_BLOCKS * B) {
          if (!positions.includes(position)) positions.push(position)
          const i = positions.indexOf(position)
          if (i === 1 && file.includes('/v0/')) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' })
          if (i === 2 && file.includes('/v0/')) for (let k = 0; k < 20; k++) await new Promise(resolve => setImmediate(resolve))
        }
        return h.writev(buffers, position)
      }),
      read: (buf: Buffer, bufOffset: number, length: number, position: number) => track('read', () => h.read(buf, bufOffset, length, position)),
      datasync: () => track('datasync', () => h.datasync()),
      truncate: (length: number) => track('truncate', () => h.truncate(length)),
      size: () => track('size', () => h.size()),
      close: async () => {
        if (pending > 0) violations.push(`close of ${file} with ${pending} operations in flight`)
        closed = true
        return h.close()
      }
    }
  }
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const home = new SimHome(path.join(dir, 'pool'), new Rng(5), 2, 100, 2)
  const store = await Store.open(dir, { fileLayer: layer, home, checkpointIntervalMs: 0 })
  const now = [0, 1, 2].map(i => blockOf(90 + i, MiB_BLOCKS))
  const results = await Promise.allSettled([0, 1, 2].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
  t.same(results.map(r => r.status), ['fulfilled', 'fulfilled', 'fulfilled'], 'every write succeeds on the copy left')
  t.equal(positions.length, 3, 'three big writevs')
  await store.flush()
  for (let i = 0; i < 3; i++) t.equal(await regionState(store, i, Buffer.alloc(0), now[i]), 'new', `write ${i} reads back`)
  await store.close()
  t.same(violations, [], 'no handle was closed under an operation, nor used after its close')
})

// A flush called while a group's writevs are in flight covers every write called before it:
// it resolves only after they all landed and were synced, and a power loss right after
// keeps them all. Reads meanwhile see each block's old or new version, never zeros.
t.test('a flush and reads while writevs of a group are in flight', async t => {
  const sim = new SimFileLayer()
  const layer = new OrderLayer(sim)
  const { dir, store } = await newStore(t, layer, 4 * SEGMENT) // the group's writevs all fit
  const old = [0, 1, 2, 3].map(i => blockOf(110 + i, MiB_BLOCKS))
  const now = [0, 1, 2, 3].map(i => blockOf(120 + i, MiB_BLOCKS))
  for (let i = 0; i < 4; i++) await store.write(i * MiB_BLOCKS * B, old[i])
  await store.flush()
  let releaseA: (() => void) | undefined
  const readsWhileHeld: string[] = []
  layer.big = 0
  layer.beforeBig = async (n) => {
    if (n === 2) await new Promise<void>(resolve => { releaseA = resolve })
    if (n === 4) {
      // Every writev of the group is in flight or done, the first held: read every region.
      for (let i = 0; i < 4; i++) { readsWhileHeld.push(await regionState(store, i, old[i], now[i]))}
      setImmediate(() => releaseA?.())
    }
  }
  const order: string[] = []
  const writes = [0, 1, 2, 3].map(i => store.write(i * MiB_BLOCKS * B, now[i]).then(() => { order.push(`write ${i}`) }))
  const flush = store.flush().then(() => { order.push('flush') })
  await Promise.all([...writes, flush])
  t.equal(layer.big, 4, 'four big writevs')
  t.equal(order[order.length - 1], 'flush', `the flush resolved last (${order.join(', ')})`)
  t.ok(readsWhileHeld.every(s => s === 'old' || s === 'new'), `reads in flight: old or new (${readsWhileHeld.join(', ')})`)
  t.equal(readsWhileHeld[1], 'old', 'a write not landed yet reads its old version')
  await store.abandon()
  sim.crash(new Rng(3)) // nothing unsynced is left to lose
  const after = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  for (let i = 0; i < 4; i++) t.equal(await regionState(after, i, old[i], now[i]), 'new', `write ${i} survives the power loss after the flush`)
  await after.close()
})

// close() called while a group's writevs are in flight (one held back), and a write called
// while close runs: close waits for the group; every write that resolved is there after a
// reopen, and a write called during close either fails or is there too.
t.test('close while writevs of a group are in flight, and a write called during close', async t => {
  for (const after of ['reopen', 'power loss'] as const) await t.test(after, t => closeInFlight(t, after))
})

/** An rng for SimFileLayer.crash that keeps none of the unsynced operations. */
function keepNone (): Rng {
  const rng = new Rng(2)
  rng.int = () => 0
  rng.chance = () => false
  return rng
}

async function closeInFlight (t: Test, after: 'reopen' | 'power loss'): Promise<void> {
  const sim = new SimFileLayer()
  const layer = new OrderLayer(sim)
  const { dir, store } = await newStore(t, layer, 4 * SEGMENT)
  const now = [0, 1, 2, 3].map(i => blockOf(130 + i, MiB_BLOCKS))
  let releaseA: (() => void) | undefined
  let closing: Promise<void> | undefined
  let late: Promise<string> | undefined
  const lateData = blockOf(140, MiB_BLOCKS)
  layer.big = 0
  layer.beforeBig = async (n) => {
    if (n === 2) await new Promise<void>(resolve => { releaseA = resolve })
    if (n === 4) {
      closing = store.close()
      await new Promise(resolve => setImmediate(resolve))
      late = store.write(4 * MiB_BLOCKS * B, lateData).then(() => 'fulfilled', (err: Error) => `rejected ${(err as { code?: string }).code ?? err.message}`)
      setImmediate(() => releaseA?.())
    }
  }
  const results = await Promise.allSettled([0, 1, 2, 3].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
  t.same(results.map(r => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'], 'the writes in flight at close complete')
  t.ok(closing !== undefined, 'close was called while they were in flight')
  await closing
  const lateResult = await late!
  t.comment(`the write called during close: ${lateResult}`)
  if (after === 'power loss') sim.crash(keepNone())
  const again = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  for (let i = 0; i < 4; i++) t.equal(await regionState(again, i, Buffer.alloc(MiB_BLOCKS * B), now[i]), 'new', `write ${i} is there after the reopen`)
  const lateState = await regionState(again, 4, Buffer.alloc(MiB_BLOCKS * B), lateData)
  if (lateResult === 'fulfilled' && after === 'reopen') t.equal(lateState, 'new', 'the write called during close resolved: it is there')
  else if (lateResult === 'fulfilled') t.ok(lateState === 'new' || lateState === 'old', `the write called during close, never flushed: there or not, never CORRUPT (${lateState})`)
  else t.equal(lateState, 'old', 'the write called during close failed: it is not there')
  t.same((await again.verify()).problems, [], 'verify is clean')
  await again.close()
}

// Block CRCs given with a write (the /dev/fuse readers compute them) go into the entry as
// they are. A wrong one (of other bytes: a stale slot) must never make wrong data readable:
// the read fails CORRUPT and verify reports it; CRCs of the wrong count are not used; above
// 4 GiB the same holds.
t.test('block CRCs given with a write: wrong ones are caught, not served; the wrong count is ignored', async t => {
  const dir = tmpDir(t)
  const size = 8 * 1024 * 1024 * 1024
  await Store.create(dir, { sizeBytes: size, blockBytes: B, segmentBytes: SEGMENT })
  const store = await Store.open(dir, { fileLayer: new SimFileLayer(), checkpointIntervalMs: 0 })
  const crcsOf = (data: Buffer): Uint32Array => {
    const out = new Uint32Array(data.length / B)
    for (let i = 0; i < out.length; i++) out[i] = crc32c(data.subarray(i * B, (i + 1) * B))
    return out
  }
  const high = 5 * 1024 * 1024 * 1024 + 8 * B // past 2^32
  const good = blockOf(150, 8)
  await store.write(high, good, crcsOf(good))
  t.same(await store.read(high, good.length), good, 'right CRCs above 4 GiB: reads back')
  const other = blockOf(151, 8)
  const data = blockOf(152, 8)
  await store.write(0, data, crcsOf(other)) // CRCs of other bytes
  await t.rejects(store.read(0, B), { code: 'CORRUPT' }, 'a block written with a wrong CRC is never served')
  const fewer = blockOf(153, 8)
  await store.write(64 * B, fewer, crcsOf(fewer).subarray(0, 7)) // one CRC short: not used
  t.same(await store.read(64 * B, fewer.length), fewer, 'CRCs of the wrong count are computed again')
  const report = await store.verify()
  t.equal(report.ok, false, 'verify reports the block with the wrong CRC')
  t.ok(report.problems.some(p => /block 0\b/.test(p)), `a problem names block 0: ${JSON.stringify(report.problems.slice(0, 3))}`)
  await store.close()
})

// The pool is full when a group needs the next segment: the writes that went into the full
// segment stay, the rest fail NO_SPACE (a write split by the roll may keep its first blocks:
// every block reads its old or its new version), nothing else changes, after a reopen too.
t.test('no room for the next segment in the middle of a group: earlier writes stay, later ones fail NO_SPACE', async t => {
  const sim = new SimFileLayer()
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const home = new SimHome(path.join(dir, 'pool'), new Rng(7), 1, 1, 1) // one volume, room for one segment
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, home, checkpointIntervalMs: 0 })
  const store = await open()
  const old = [0, 1, 2, 3, 4, 5, 6].map(i => blockOf(160 + i, MiB_BLOCKS))
  for (let i = 0; i < 5; i++) await store.write(i * MiB_BLOCKS * B, old[i])
  await store.flush()
  const now = [0, 1, 2, 3, 4, 5, 6].map(i => blockOf(170 + i, MiB_BLOCKS))
  const results = await Promise.allSettled([5, 6, 0].map(i => store.write(i * MiB_BLOCKS * B, now[i])))
  const status = results.map(r => r.status === 'fulfilled' ? 'fulfilled' : (r.reason as { code?: string }).code)
  t.comment(`writes: ${status.join(', ')}`)
  t.ok(status.includes('NO_SPACE'), 'a write fails NO_SPACE')
  const check = async (s: Store, when: string): Promise<void> => {
    for (const [k, i] of [5, 6, 0].entries()) {
      const got = await s.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B)
      const was = i < 5 ? old[i] : Buffer.alloc(MiB_BLOCKS * B)
      let ok = true
      for (let b = 0; b < MiB_BLOCKS && ok; b++) {
        const blk = got.subarray(b * B, (b + 1) * B)
        ok = status[k] === 'fulfilled' ? blk.equals(now[i].subarray(b * B, (b + 1) * B)) : blk.equals(was.subarray(b * B, (b + 1) * B)) || blk.equals(now[i].subarray(b * B, (b + 1) * B))
      }
      t.ok(ok, `${when}: write to region ${i} (${status[k]}) reads ${status[k] === 'fulfilled' ? 'its data' : 'old or new blocks'}`)
    }
    for (let i = 1; i < 5; i++) t.same(await s.read(i * MiB_BLOCKS * B, MiB_BLOCKS * B), old[i], `${when}: region ${i} unchanged`)
  }
  await check(store, 'at once')
  await store.flush()
  await store.close()
  const again = await open()
  await check(again, 'after reopen')
  t.same((await again.verify()).problems, [], 'verify is clean')
  await again.close()
})
