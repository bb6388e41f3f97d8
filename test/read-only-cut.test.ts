// A write into the current segment fails because its filesystem went read-only (EROFS: an ext4
// with errors=remount-ro), and so does the cut back to the tail that every failed append makes.
// When the failed write left nothing past the tail there is nothing to cut, and the log goes on
// in a new segment (test/pool-volume-errors-ro.test.ts does it on a real ext4). When an earlier
// truncate of the same cut reached the page cache and its sync failed, the disk may still hold
// the failed append's bytes: appends must keep failing rather than go on past them.
import t, { type Test } from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer, errno } from '../src/testing/sim-file-layer'
import { PassThroughLayer, scratchDir, sealCurrent } from './helpers/sim-layer'

const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024

type Op = 'writev' | 'truncate' | 'datasync'

/** Fails the next calls of each op queued in `fail` (an errno code each; '' lets one through), on segment files. */
class FaultLayer extends PassThroughLayer {
  readonly fail: Record<Op, string[]> = { writev: [], truncate: [], datasync: [] }
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    const layer = this
    const fault = (op: Op): Error | undefined => {
      const code = /seg-/.test(file) ? layer.fail[op].shift() : undefined
      return code === undefined || code === '' ? undefined : errno(code, `${op} ${file}`)
    }
    return new Proxy(h, {
      get (target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver)
        if (typeof v !== 'function') return v
        if (prop === 'writev' || prop === 'truncate' || prop === 'datasync') {
          return async (...args: unknown[]) => { const err = fault(prop); if (err) throw err; return v.apply(target, args) }
        }
        if (prop === 'writevNow') return (...args: unknown[]) => { const err = fault('writev'); if (err) throw err; return v.apply(target, args) }
        return v.bind(target)
      }
    })
  }
}

async function setup (t: Test): Promise<{ sim: SimFileLayer, layer: FaultLayer, open: () => Promise<Store> }> {
  const dir = scratchDir(t, 'read-only-cut')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const sim = new SimFileLayer()
  const layer = new FaultLayer(sim)
  return { sim, layer, open: () => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0 }) }
}

/** Power loss with `store` open; the store opened again reads `expect` ([offset, bytes, what]) and verifies clean. */
async function crashAndCheck (t: Test, store: Store, { sim, open }: { sim: SimFileLayer, open: () => Promise<Store> }, rng: Rng, expect: Array<[number, Buffer, string]>): Promise<void> {
  await store.abandon()
  sim.crash(rng)
  const again = await open()
  for (const [offset, bytes, what] of expect) t.ok((await again.read(offset, bytes.length)).equals(bytes), what)
  t.ok((await again.verify()).ok, 'verify')
  await again.close()
}

t.test('the write and its cut both refused by a read-only filesystem, nothing past the tail: the log goes on in a new segment', async t => {
  const rng = new Rng(41)
  const disk = await setup(t)
  const { layer, open } = disk
  const store = await open()
  const a = rng.bytes(4 * B)
  await store.write(0, a)
  await store.flush()
  const before = store.logSegments().length
  layer.fail.writev.push('EROFS')
  layer.fail.truncate.push('EROFS')
  const b = rng.bytes(3 * B)
  await store.write(8 * B, b)
  t.equal(store.logSegments().length, before + 1, 'a new segment')
  t.ok((await store.read(8 * B, 3 * B)).equals(b), 'the write reads back')
  await store.flush()
  await crashAndCheck(t, store, disk, rng, [[0, a, 'the first write survives a crash'], [8 * B, b, 'and the one that went on in the new segment']])
})

t.test('a cut whose truncate went through but whose sync failed, then refused as read-only: appends keep failing', async t => {
  const rng = new Rng(42)
  const disk = await setup(t)
  const { layer, open } = disk
  const store = await open()
  const a = rng.bytes(4 * B)
  await store.write(0, a)
  await store.flush()
  layer.fail.writev.push('EROFS')
  layer.fail.datasync.push('EIO') // the cut's sync
  layer.fail.truncate.push('', 'EROFS', 'EROFS') // the cut goes through (its sync fails); the roll's try again, and the next append's, are refused
  await t.rejects(store.write(8 * B, rng.bytes(3 * B)), 'the write fails')
  await t.rejects(store.write(16 * B, rng.bytes(B)), 'a later write fails too: the cut is not durable')
  t.ok((await store.read(0, 4 * B)).equals(a), 'earlier data reads')
  t.same(layer.fail, { writev: [], truncate: [], datasync: [] }, 'every fault was met')
  await crashAndCheck(t, store, disk, rng, [[0, a, 'the first write survives a crash'], [8 * B, Buffer.alloc(9 * B), 'the failed writes left nothing']])
})

t.test('a fresh current segment (made ahead) on a filesystem gone read-only: the write goes on in a new segment', async t => {
  const rng = new Rng(43)
  const disk = await setup(t)
  const { layer, open } = disk
  const store = await open()
  const a = rng.bytes(4 * B)
  await store.write(0, a)
  await store.flush()
  await sealCurrent(store) // the one made ahead becomes current, empty
  const fresh = store.logSegments().at(-1)!.id
  layer.fail.writev.push('EROFS')
  layer.fail.truncate.push('EROFS')
  const b = rng.bytes(3 * B)
  await store.write(8 * B, b) // READ_ONLY before: a fresh segment did not roll
  t.ok(store.logSegments().at(-1)!.id > fresh, 'a new segment')
  t.ok((await store.read(8 * B, 3 * B)).equals(b), 'the write reads back')
  await store.flush()
  await crashAndCheck(t, store, disk, rng, [[0, a, 'the first write survives a crash'], [8 * B, b, 'and the one in the new segment']])
})
