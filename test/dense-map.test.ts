import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { BlockMap, DENSE_ROW_BYTES } from '../src/store/block-map'
import { BLOCK_MAP_FILE, adoptSavedMap, saveBlockMap, takeBlockMap } from '../src/store/block-map-file'
import { nodeFileLayer } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { FIXTURES } from './helpers/paths'

/**
 * The block map's dense layout (issue 11: the daemon's peak RSS). Once the volume's size is
 * known and the hash table would grow to as many bytes as one row per block of the volume,
 * the map is an array indexed by block number (20 bytes a block, no keys, no load factor);
 * it answers exactly as the hash table did, walks in block order, saves as block map file
 * version 3 and reads back, and a set past the volume's end turns it back into a hash table.
 */

const SEED = Number(process.env.DENSE_MAP_SEED ?? 0xde45e)
t.comment(`seed ${SEED} (rerun with DENSE_MAP_SEED=${SEED})`)
const rng = new Rng(SEED)

type Row = [position: number, crc: number, seq: number]

/** Every way of reading the map agrees with the model. */
function check (t: Test, map: BlockMap, model: Map<number, Row>, volumeBlocks: number, what: string): void {
  t.equal(map.count, model.size, `${what}: count`)
  t.equal(map.trimmed, [...model.values()].filter(r => r[0] < 0).length, `${what}: trimmed`)
  const sorted = [...model.keys()].sort((a, b) => a - b)
  t.same([...map.sortedBlocks()], sorted, `${what}: sortedBlocks`)
  const seen: Array<[number, ...Row]> = []
  map.forEach((b, p, c, s) => seen.push([b, p, c, s]))
  t.same(seen.sort((a, b) => a[0] - b[0]), sorted.map(b => [b, ...model.get(b)!]), `${what}: forEach`)
  const rows = { keys: new Float64Array(7), positions: new Float64Array(7), crcs: new Uint32Array(7), seqs: new Float64Array(7) }
  const walked: Array<[number, ...Row]> = []
  for (let slot = 0; ;) {
    const { n, next } = map.rowsFrom(slot, rows)
    if (n === 0) break
    for (let i = 0; i < n; i++) walked.push([rows.keys[i], rows.positions[i], rows.crcs[i], rows.seqs[i]])
    slot = next
  }
  t.same(walked.sort((a, b) => a[0] - b[0]), seen, `${what}: rowsFrom`)
  const out = new Float64Array(3)
  let bad = 0
  for (let b = 0; b < volumeBlocks + 3; b++) {
    const r = model.get(b)
    const found = map.lookup(b, out)
    if (found !== (r !== undefined) || map.position(b) !== (r ? r[0] : -1)) bad++
    else if (r && (out[0] !== r[0] || out[1] !== r[2] || out[2] !== r[1] || map.crc(b) !== r[1] || map.seq(b) !== r[2])) bad++
  }
  t.equal(bad, 0, `${what}: every block looks up as the model says`)
}

t.test('the map turns dense when that is no bigger than the next hash table, and answers as the model', async t => {
  const volume = 5000
  const map = new BlockMap()
  map.setVolumeBlocks(volume)
  const model = new Map<number, Row>()
  let seq = 1
  let wentDense = -1
  for (let i = 0; i < 6000; i++) {
    const b = rng.int(volume)
    const op = rng.int(10)
    if (op === 0) {
      t.equal(map.delete(b), model.delete(b), 'delete says whether the block was mapped')
    } else if (op === 1) {
      map.set(b, -2, 0, seq); model.set(b, [-2, 0, seq]); seq++ // trimmed
    } else if (op === 2 && model.has(b)) {
      map.set(b, 999, 9, model.get(b)![2] - 1) // an older version: ignored
    } else {
      const r: Row = [rng.int(1 << 30) * 4096, rng.int(2 ** 32), seq++]
      map.set(b, ...r); model.set(b, r)
    }
    if (wentDense < 0 && map.isDense) wentDense = map.count
  }
  t.ok(wentDense > 0, `dense from ${wentDense} blocks on`)
  // 5000 rows of 20 bytes = 100,000 bytes: bigger than 2048 slots of 28 (57,344), smaller than 4096 (114,688).
  t.ok(wentDense > 0.7 * 2048 && wentDense <= 0.7 * 2048 + 1, 'at the growth past 2048 slots')
  t.equal(map.memoryBytes, volume * DENSE_ROW_BYTES, '20 bytes a block of the volume')
  check(t, map, model, volume, 'dense')
  // Rows do not move in the dense layout: deletes and sets keep the layout.
  const layout = map.layout
  const some = [...model.keys()][0]
  map.delete(some); model.delete(some)
  map.set(some, 4096, 1, seq); model.set(some, [4096, 1, seq++])
  t.equal(map.layout, layout, 'the layout stays through deletes and sets')
  // A block past the volume's end: a hash table again, nothing lost.
  map.set(volume + 1, 8192, 2, seq); model.set(volume + 1, [8192, 2, seq++])
  t.notOk(map.isDense, 'a set past the end turns it back into a hash table')
  t.not(map.layout, layout, 'rows moved')
  check(t, map, model, volume, 'hash again')
})

t.test('setVolumeBlocks lays out a map again: grown, shrunk, and a hash table that is bigger', async t => {
  const model = new Map<number, Row>()
  const map = new BlockMap()
  for (let b = 0; b < 3000; b += 2) { map.set(b, b * 4096, b, b + 1); model.set(b, [b * 4096, b, b + 1]) }
  t.notOk(map.isDense, 'no volume size: a hash table')
  map.setVolumeBlocks(3000)
  t.ok(map.isDense, 'told the size: 3000 rows are smaller than its 4096 slots')
  check(t, map, model, 3000, 'dense of 3000')
  map.setVolumeBlocks(4000)
  t.ok(map.isDense, 'grown: dense of the new size')
  t.equal(map.memoryBytes, 4000 * DENSE_ROW_BYTES)
  map.set(3999, 1, 1, 9999); model.set(3999, [1, 1, 9999])
  check(t, map, model, 4000, 'dense of 4000')
  map.delete(3999); model.delete(3999)
  map.setVolumeBlocks(3000)
  t.ok(map.isDense, 'shrunk with nothing past the end: dense')
  check(t, map, model, 3000, 'dense shrunk')
  map.setVolumeBlocks(1 << 20)
  t.notOk(map.isDense, 'a volume much bigger than what is mapped: a hash table')
  check(t, map, model, 3000, 'hash for a big volume')
  const empty = new BlockMap()
  empty.setVolumeBlocks(1 << 30)
  empty.set(5, 4096, 1, 1)
  t.notOk(empty.isDense, 'a large volume starts as a hash table')
  t.ok(empty.memoryBytes < 64 * 1024, 'and a small one')
})

t.test('a 2 GiB volume written whole: 10 MiB of map, and the table never doubled past it', async t => {
  const volume = (2 * 1024 ** 3) / 4096
  const map = new BlockMap()
  map.setVolumeBlocks(volume)
  let most = 0
  for (let b = 0; b < volume; b++) {
    map.set(b, b * 4096, b, b + 1)
    if ((b & 4095) === 0) most = Math.max(most, map.memoryBytes)
  }
  t.ok(map.isDense)
  t.equal(map.memoryBytes, 10 * 1024 ** 2, '10 MiB where the hash table took 28')
  t.ok(most <= 10 * 1024 ** 2, `at most ${(most / 1024 ** 2).toFixed(1)} MiB on the way`)
  t.equal(map.position(volume - 1), (volume - 1) * 4096)
  t.equal(map.position(0.5), -1, 'not a block number: not mapped')
  t.equal(map.position(volume), -1, 'past the end: not mapped')
})

t.test('version 3 (dense) saves, reads back whole or deferred, takes a delta', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-dense-map-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const map = new BlockMap()
  map.setVolumeBlocks(300)
  const model = new Map<number, Row>()
  for (let i = 0; i < 400; i++) {
    const b = rng.int(300)
    const r: Row = rng.int(5) === 0 ? [-2, 0, i + 1] : [rng.int(1 << 20) * 4096, rng.int(2 ** 32), i + 1]
    map.set(b, ...r); model.set(b, r)
  }
  t.ok(map.isDense)
  const store = { uuid: '00000000-0000-4000-8000-00000000000d', blockBytes: 4096 }
  await saveBlockMap(nodeFileLayer, dir, map, store, { seq: 400, position: 1, timeMs: 2 })
  for (const keep of [false, true]) {
    if (!keep) fs.copyFileSync(path.join(dir, BLOCK_MAP_FILE), path.join(dir, 'copy'))
    else fs.copyFileSync(path.join(dir, 'copy'), path.join(dir, BLOCK_MAP_FILE))
    const taken = await takeBlockMap(nodeFileLayer, dir, keep)
    if (!('saved' in taken)) throw new Error(taken.why)
    t.equal(taken.saved.dense, true)
    t.equal(taken.saved.stamp.slots, 300, 'slots: the rows')
    const tables = keep ? await taken.saved.deferred!.readTables() : { tables: taken.saved.tables! }
    if ('why' in tables) throw new Error(tables.why)
    const m = new BlockMap()
    m.setVolumeBlocks(300)
    t.equal(adoptSavedMap(m, taken.saved, tables.tables), undefined)
    t.ok(m.isDense, 'adopted dense')
    check(t, m, model, 300, keep ? 'read deferred' : 'read whole')
    if (!keep) {
      // A delta on the dense base (the take renamed it blockmap.base).
      const before = new Map(model)
      m.trackChanges(taken.saved.base, 64)
      m.set(7, 4096 * 77, 7, 1000); model.set(7, [4096 * 77, 7, 1000])
      if (m.delete(8)) model.delete(8)
      await saveBlockMap(nodeFileLayer, dir, m, store, { seq: 1000, position: 2, timeMs: 3 })
      const again = await takeBlockMap(nodeFileLayer, dir, true)
      if (!('saved' in again)) throw new Error(again.why)
      t.ok(again.saved.delta, 'a delta was written')
      const d = new BlockMap()
      t.equal(adoptSavedMap(d, again.saved, again.saved.tables ?? (await again.saved.deferred!.readTables() as { tables: never }).tables), undefined)
      check(t, d, model, 300, 'base and delta')
      fs.rmSync(path.join(dir, 'blockmap.delta'))
      model.clear()
      for (const [b, r] of before) model.set(b, r)
    }
  }
  // A damaged dense row is refused.
  const m = new BlockMap()
  t.match(m.adopt({ positions: Float64Array.of(0, -5), seqs: new Float64Array(2), crcs: new Uint32Array(2) }), /not a log position/)
  t.match(m.adopt({ positions: Float64Array.of(0, 1.5), seqs: new Float64Array(2), crcs: new Uint32Array(2) }), /not a log position/)
})

t.test('version 3 is pinned: the fixture reads as the release that wrote it made it', async t => {
  // test/fixtures/blockmap-3 (make-blockmap-3.mjs): a dense map of 16 rows.
  const fixture = path.join(FIXTURES, 'blockmap-3')
  const taken = await takeBlockMap(nodeFileLayer, fixture, true)
  if (!('saved' in taken)) throw new Error(taken.why)
  t.same({ ...taken.saved.stamp }, { uuid: '00000000-0000-4000-8000-000000000003', blockBytes: 4096, seq: 42, position: 1234567, timeMs: 1796169600000, slots: 16, blocks: 3, trimmed: 1 })
  t.equal(taken.saved.dense, true)
  const read = await taken.saved.deferred!.readTables()
  if ('why' in read) throw new Error(read.why)
  const m = new BlockMap()
  t.equal(adoptSavedMap(m, taken.saved, read.tables), undefined)
  t.ok(m.isDense)
  t.same([...m.sortedBlocks()].map(b => [b, m.position(b), m.crc(b), m.seq(b)]), [[3, 8192, 11, 5], [9, -2, 0, 7], [15, 40960, 22, 9]])
  t.equal(m.position(16), -1, 'past the rows: not mapped')
  // The version 2 fixture (a block at 2^40) adopted by a map of a small volume stays a hash table.
  const v2 = await takeBlockMap(nodeFileLayer, path.join(FIXTURES, 'blockmap-2'), true)
  if (!('saved' in v2)) throw new Error(v2.why)
  const r2 = await v2.saved.deferred!.readTables()
  if ('why' in r2) throw new Error(r2.why)
  const h = new BlockMap()
  h.setVolumeBlocks(16)
  t.equal(adoptSavedMap(h, v2.saved, r2.tables), undefined)
  t.notOk(h.isDense, 'a block past the volume keeps the hash layout')
  t.same([...h.sortedBlocks()], [3, 9, 2 ** 40])
})

t.test('a store whose map went dense closes, reopens from the saved map (version 3), resizes', async t => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-dense-store-'))
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  const B = 4096
  const BLOCKS = 1024
  await Store.create(dir, { sizeBytes: BLOCKS * B, segmentBytes: 1024 * 1024 + 64 * 1024 })
  const image = Buffer.alloc(BLOCKS * B)
  let store = await Store.open(dir)
  for (let i = 0; i < 900; i++) {
    const block = rng.int(BLOCKS)
    const data = Buffer.alloc(B, (i % 251) + 1)
    await store.write(block * B, data)
    data.copy(image, block * B)
  }
  await store.discard(5 * B, 3 * B)
  image.fill(0, 5 * B, 8 * B)
  const map = (s: Store): BlockMap => (s as unknown as { p: { map: BlockMap } }).p.map
  t.ok(map(store).isDense, `dense after ${map(store).count} blocks`)
  t.equal(store.status().mapMemoryBytes, BLOCKS * DENSE_ROW_BYTES)
  t.ok((await store.read(0, BLOCKS * B)).equals(image), 'reads back')
  await store.close()
  const head = fs.readFileSync(path.join(dir, 'index', BLOCK_MAP_FILE)).readUInt32LE(8)
  t.equal(head, 3, 'saved as version 3')
  store = await Store.open(dir)
  t.same(store.recovery.blockMap, { from: 'saved' }, 'the saved dense map was used')
  t.ok(map(store).isDense)
  t.ok((await store.read(0, BLOCKS * B)).equals(image), 'reads back after reopening')
  await store.resize(2 * BLOCKS * B)
  t.ok(map(store).memoryBytes <= 2 * BLOCKS * DENSE_ROW_BYTES, `grown: the smaller layout (${map(store).isDense ? 'dense' : 'hash'})`)
  await store.write((2 * BLOCKS - 1) * B, Buffer.alloc(B, 7))
  t.ok((await store.read((2 * BLOCKS - 1) * B, B)).equals(Buffer.alloc(B, 7)), 'a block of the grown part')
  t.ok((await store.read(0, BLOCKS * B)).equals(image), 'the rest as before')
  await store.close()
  const { store: ro } = await openStore(dir, {}, [], 'read')
  t.ok((await ro.read(0, BLOCKS * B)).equals(image), 'a read-only open (deferred dense table) reads it back')
  await ro.close()
})
