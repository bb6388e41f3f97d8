import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { diffSnapshots } from '../src/copy/diff'
import { setIdentitiesAt } from '../src/copy/set-identity'
import { BlockMap } from '../src/store/block-map'
import { BLOCK_MAP_FILE, adoptSavedMap, takeBlockMap } from '../src/store/block-map-file'
import { nodeFileLayer } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { FIXTURES } from './helpers/paths'

/**
 * A read-only open of a store whose saved block map is of version 2 defers the table
 * (BlockMap.defer): its counts come from the checked header, its rows are read when a command
 * needs them, and a command that touches few blocks asks the index instead. Whatever path a
 * read takes, it returns what an open that reads the whole map returns; a table that fails
 * its checks when it is finally read is replaced by the index's, never used.
 */

const SEED = Number(process.env.DEFERRED_MAP_SEED ?? 0xdef3)
const B = 4096
const BLOCKS = 4096
const SIZE = BLOCKS * B
const SEGMENT = 1024 * 1024 + 64 * 1024

t.comment(`seed ${SEED} (rerun with DEFERRED_MAP_SEED=${SEED})`)
const rng = new Rng(SEED)

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-deferred-map-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Internals the tests look at: whether the open store's map is still deferred. */
const mapOf = (store: Store): BlockMap => (store as unknown as { p: { map: BlockMap } }).p.map

/** A store with snapshots a and b, b a few scattered blocks (and a trim) after a; closed cleanly. */
async function madeStore (t: Test): Promise<string> {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  for (let i = 0; i < 200; i++) {
    const count = 1 + rng.int(16)
    await store.write(rng.int(BLOCKS - count) * B, rng.bytes(count * B))
  }
  await store.discard(100 * B, 8 * B)
  await store.snapshot({ name: 'a' })
  for (let i = 0; i < 20; i++) await store.write(rng.int(BLOCKS) * B, rng.bytes(B))
  await store.discard(3000 * B, 2 * B)
  await store.snapshot({ name: 'b' })
  for (let i = 0; i < 5; i++) await store.write(rng.int(BLOCKS) * B, rng.bytes(B))
  await store.close()
  return dir
}

/** What a read-only open answers, asked in the order a command asks (the map deferred as long as it can be). */
async function answers (store: Store): Promise<Record<string, unknown>> {
  const rng = new Rng(SEED + 1) // the same questions of every store
  const status = store.status()
  const diff = await diffSnapshots(store, 'a', 'b')
  const a = store.snapshotNamed('a')
  const b = store.snapshotNamed('b')
  const few = Float64Array.from(new Set([0, 7, 100, 101, 3000, 3001, 4095, ...Array.from({ length: 20 }, () => rng.int(BLOCKS))])).sort()
  const at = await store.versionsOf([a.seq, b.seq], few)
  const ranges = []
  for (let i = 0; i < 10; i++) {
    const off = rng.int(SIZE - 64 * 1024)
    ranges.push((await store.readSnapshot('a', off, 1 + rng.int(64 * 1024))).toString('base64').length, (await store.readSnapshot('a', off, 5000)).toString('hex').slice(0, 64))
  }
  const deferredSoFar = !mapOf(store).isLoaded
  const identities = await setIdentitiesAt(store, [b.seq, a.seq])
  const image = await store.read(0, SIZE)
  return {
    written: status.writtenBytes,
    memory: status.mapMemoryBytes,
    diff,
    at: at.map(x => [Array.from(x.where), Array.from(x.crcs)]),
    ranges,
    deferredSoFar,
    identities,
    image: image.toString('base64'),
    snapA: (await store.readSnapshot('a', 0, SIZE)).toString('base64')
  }
}

t.test('a deferred map answers as the whole map does, reading it only when a command needs every block', { timeout: 120_000 }, async t => {
  const dir = await madeStore(t)
  const { store: deferred } = await openStore(dir, {}, [], 'read')
  t.same(deferred.recovery.blockMap, { from: 'saved' })
  t.notOk(mapOf(deferred).isLoaded, 'the read-only open deferred the table')
  const got = await answers(deferred)
  t.ok(mapOf(deferred).isLoaded, 'a read of the whole image read it')
  await deferred.close()
  // The same questions of an open that reads the whole map at once (a write open), and of one from the index.
  const whole = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.ok(mapOf(whole).isLoaded)
  const want = await answers(whole)
  await whole.close()
  t.equal(got.deferredSoFar, true, 'status, diff, a few blocks\' versions and short reads left it deferred')
  t.same({ ...got, deferredSoFar: null }, { ...want, deferredSoFar: null }, 'every answer is the same')
  const indexed = await Store.open(dir, { checkpointIntervalMs: 0, savedBlockMap: false })
  t.equal(indexed.recovery.blockMap.from, 'index')
  t.same({ ...(await answers(indexed)), deferredSoFar: null }, { ...want, deferredSoFar: null }, 'and the same as from the index history')
  await indexed.close()
})

t.test('many small reads of a deferred map read it once their index lookups add up', { timeout: 60_000 }, async t => {
  const dir = await madeStore(t)
  const { store: whole } = await openStore(dir, {}, [], 'read')
  const image = await whole.readSnapshot('a', 0, SIZE) // reads its map whole; the file stays as it was
  await whole.close()
  const { store } = await openStore(dir, {}, [], 'read')
  t.notOk(mapOf(store).isLoaded)
  let reads = 0
  while (!mapOf(store).isLoaded && reads < 1000) {
    const block = (reads * 37) % BLOCKS
    t.ok((await store.readSnapshot('a', block * B, B)).equals(image.subarray(block * B, (block + 1) * B)), `block ${block}`, { diagnostic: false })
    reads++
  }
  t.ok(mapOf(store).isLoaded, `the map was read after ${reads} one-block reads (a clone's parent serves reads like these for as long as it is open)`)
  t.ok(reads > 100 && reads <= 257, 'after about as many lookups as the bound allows (256 for a small map)')
  await store.close()
})

t.test('a damaged table is found when it is read, and the index answers instead', { timeout: 120_000 }, async t => {
  const dir = await madeStore(t)
  const { store: good } = await openStore(dir, {}, [], 'read')
  const image = await good.read(0, SIZE)
  const written = good.status().writtenBytes
  await good.close()
  const file = path.join(dir, 'index', BLOCK_MAP_FILE)
  const bytes = fs.readFileSync(file)
  const tableAt = 16 + Math.ceil((bytes.readUInt32LE(12) + 4) / 8) * 8
  for (const [what, edit, atOpen] of [
    ['a flipped bit in the table', (b: Buffer) => { b[tableAt + 8 * 3 + 2] ^= 0x10 }, false],
    ['a flipped bit in the counts of the stamp', (b: Buffer) => { b[b.indexOf('"blocks":') + 9] ^= 0x01 }, true],
    ['a wrong header checksum', (b: Buffer) => { b[16 + bytes.readUInt32LE(12)] ^= 0xff }, true]
  ] as Array<[string, (b: Buffer) => void, boolean]>) {
    const damaged = Buffer.from(bytes)
    edit(damaged)
    fs.writeFileSync(file, damaged)
    const { store } = await openStore(dir, {}, [], 'read')
    if (atOpen) {
      t.equal(store.recovery.blockMap.from, 'index', `${what}: refused at open`)
      t.match(store.recovery.blockMap.why ?? '', /checksum|unreadable/, `${what}: says why (${store.recovery.blockMap.why})`)
    } else {
      t.notOk(mapOf(store).isLoaded, `${what}: deferred (the header is good)`)
      t.equal(store.status().writtenBytes, written, `${what}: counts from the header`)
    }
    t.ok((await store.read(0, SIZE)).equals(image), `${what}: every block reads back right`)
    t.equal(store.recovery.blockMap.from, 'index', `${what}: the map came from the index`)
    t.match(store.recovery.blockMap.why ?? '', /checksum/, `${what}: says why (${store.recovery.blockMap.why})`)
    await store.close()
    t.ok(fs.readFileSync(file).equals(damaged), `${what}: the read-only open left the file as it was`)
  }
  fs.writeFileSync(file, bytes)
})

t.test('a deferred map is read before entries past the checkpoint are replayed into it', { timeout: 120_000 }, async t => {
  const dir = await madeStore(t)
  // The index as the clean close left it, and the map saved with it: put back after writes
  // that a crash then cuts off from any checkpoint, the log holds entries past the checkpoint
  // that the map's stamp matches (no open of this release leaves that; an index restored
  // from a backup could).
  const index = path.join(dir, 'index')
  const kept = `${dir}.index`
  fs.cpSync(index, kept, { recursive: true })
  t.teardown(() => fs.rmSync(kept, { recursive: true, force: true }))
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  const later = rng.bytes(3 * B)
  await store.write(77 * B, later)
  await store.flush()
  const image = await store.read(0, SIZE)
  await store.abandon()
  fs.rmSync(index, { recursive: true })
  fs.cpSync(kept, index, { recursive: true })
  const { store: ro } = await openStore(dir, {}, [], 'read')
  t.same(ro.recovery.blockMap, { from: 'saved' }, 'the saved map was used')
  t.ok(ro.recovery.replayedEntries > 0, 'entries were replayed')
  t.ok((await ro.read(0, SIZE)).equals(image), 'the replayed writes read back over the saved map')
  await ro.close()
})

t.test('version 2 is pinned: the fixture reads, deferred or whole, as the release that wrote it made it', async t => {
  // test/fixtures/blockmap-2 (make-blockmap-2.mjs): the map of blockmap-1 in version 2.
  const fixture = path.join(FIXTURES, 'blockmap-2')
  const taken = await takeBlockMap(nodeFileLayer, fixture, true)
  if (!('saved' in taken)) throw new Error(taken.why)
  t.same({ ...taken.saved.stamp }, { uuid: '00000000-0000-4000-8000-000000000001', blockBytes: 4096, seq: 42, position: 1234567, timeMs: 1796169600000, slots: 16, blocks: 3, trimmed: 1 })
  t.notOk(taken.saved.tables, 'a kept take of version 2 defers the table')
  const read = await taken.saved.deferred!.readTables()
  if ('why' in read) throw new Error(read.why)
  const m = new BlockMap()
  t.equal(adoptSavedMap(m, taken.saved, read.tables), undefined)
  t.same([...m.sortedBlocks()].map(b => [b, m.position(b), m.crc(b), m.seq(b)]), [[3, 8192, 11, 5], [9, -2, 0, 7], [2 ** 40, 40960, 22, 9]])
  t.ok(fs.existsSync(path.join(fixture, BLOCK_MAP_FILE)), 'a kept take leaves the fixture alone')
})

t.test('a deferred map refuses to be used unread, and reads once for many waiters', async t => {
  const m = new BlockMap()
  let loads = 0
  let released = 0
  const full = new BlockMap()
  full.set(5, 4096, 9, 1)
  m.defer({ count: 1, trimmed: 0, memoryBytes: 28 * 16 }, async () => { loads++; return full }, async () => { released++ })
  t.equal(m.count, 1, 'its count before it is read')
  t.throws(() => m.position(5), /before its deferred table was loaded/, 'a lookup of an unread table throws, never answers "not mapped"')
  t.throws(() => m.forEach(() => {}), /before its deferred table was loaded/)
  await Promise.all([m.loaded(), m.loaded(), m.loaded()])
  t.equal(loads, 1, 'read once')
  t.equal(m.position(5), 4096)
  await m.releaseDeferred()
  t.equal(released, 0, 'nothing to let go of once read')
})
