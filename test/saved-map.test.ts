import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { contentIdentities, contentIdentity } from '../src/copy/content-identity'
import { adoptStore } from '../src/ops/adopt'
import { BlockMap } from '../src/store/block-map'
import { BLOCK_MAP_BASE_FILE, BLOCK_MAP_DELTA_FILE, BLOCK_MAP_FILE, BLOCK_MAP_FILE_VERSION, BLOCK_MAP_FILE_VERSION_DENSE, adoptSavedMap, deltaLimit, saveBlockMap, takeBlockMap } from '../src/store/block-map-file'
import { crc32c } from '../src/store/crc'
import { nodeFileLayer } from '../src/store/file-layer'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import crypto from 'node:crypto'
import { FIXTURES, ROOT } from './helpers/paths'

/**
 * The block map saved at a clean close (src/store/block-map-file.ts): loaded at the next
 * open, never when it may be stale (damaged, another version, another checkpoint, an index
 * rebuilt, a crash after an open), and every block reads back as the model says either way.
 */

const SEED = Number(process.env.SAVED_MAP_SEED ?? 0x5a7ed)
const B = 4096
const BLOCKS = 2048
const SIZE = BLOCKS * B
const SEGMENT = 1024 * 1024 + 64 * 1024
const DIST_STORE = path.join(ROOT, 'dist/src/store/store.js')

t.comment(`seed ${SEED} (rerun with SAVED_MAP_SEED=${SEED})`)
const rng = new Rng(SEED)

function tmpDir (t: Test, name = 'saved-map'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

const mapFile = (dir: string): string => path.join(dir, 'index', BLOCK_MAP_FILE)

/** The volume as the test wrote it, block by block (undefined: zeros). */
class Model {
  readonly blocks = new Map<number, Buffer>()
  write (block: number, data: Buffer): void {
    for (let i = 0; i < data.length / B; i++) this.blocks.set(block + i, Buffer.from(data.subarray(i * B, (i + 1) * B)))
  }

  trim (block: number, count: number): void {
    for (let i = 0; i < count; i++) this.blocks.delete(block + i)
  }

  image (): Buffer {
    const out = Buffer.alloc(SIZE)
    for (const [block, data] of this.blocks) data.copy(out, block * B)
    return out
  }

  clone (): Model {
    const m = new Model()
    for (const [k, v] of this.blocks) m.blocks.set(k, v)
    return m
  }
}

/** Random writes of 1-8 blocks and a few trims, applied to the store and the model. */
async function scribble (store: Store, model: Model, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const count = 1 + rng.int(8)
    const block = rng.int(BLOCKS - count)
    if (rng.int(10) === 0) {
      await store.discard(block * B, count * B)
      model.trim(block, count)
    } else {
      const data = rng.bytes(count * B)
      await store.write(block * B, data)
      model.write(block, data)
    }
  }
}

async function assertImage (t: Test, store: Store, model: Model, what: string): Promise<void> {
  const got = await store.read(0, SIZE)
  t.ok(got.equals(model.image()), `${what}: every block reads back as the model says`)
}

/** A store with history: writes, trims, a snapshot, more writes; closed cleanly. */
async function madeStore (t: Test): Promise<{ dir: string, model: Model, atSnapshot: Model }> {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  const model = new Model()
  await scribble(store, model, 300)
  await store.snapshot({ name: 'a' })
  const atSnapshot = model.clone()
  await scribble(store, model, 200)
  await store.close()
  return { dir, model, atSnapshot }
}

async function openChecked (t: Test, dir: string, model: Model, atSnapshot: Model, what: string): Promise<Store> {
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await assertImage(t, store, model, what)
  t.ok((await store.readSnapshot('a', 0, SIZE)).equals(atSnapshot.image()), `${what}: snapshot a reads back as it was`)
  return store
}

/** Every mapped block's location and CRC at `seq` (what the block map answers), as rows. */
async function mapRows (store: Store, seq: number): Promise<number[]> {
  const out: number[] = []
  for await (const c of store.versionsAt([seq], 100)) {
    for (let i = 0; i < c.blocks.length; i++) out.push(c.blocks[i], c.at[0].where[i], c.at[0].crcs[i])
  }
  return out
}

t.test('a clean close saves the map; the next open loads it, then deletes it before writing', { timeout: 120_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  t.ok(fs.existsSync(mapFile(dir)), 'the close saved the map')
  const loaded = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.same(loaded.recovery.blockMap, { from: 'saved' }, 'the open loaded it')
  t.notOk(fs.existsSync(mapFile(dir)), 'and deleted it')
  await assertImage(t, loaded, model, 'loaded map')
  t.ok((await loaded.readSnapshot('a', 0, SIZE)).equals(atSnapshot.image()), 'snapshot a through the loaded map')
  const seq = loaded.status().index.seq
  const written = loaded.status().writtenBytes
  const rows = await mapRows(loaded, seq)
  const identity = await contentIdentity(loaded, seq)
  await loaded.abandon() // no close: no new file
  t.notOk(fs.existsSync(mapFile(dir)), 'a crash after the open leaves no file')
  const scanned = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.equal(scanned.recovery.blockMap.from, 'index', 'without the file the map comes from the index history')
  t.equal(scanned.status().writtenBytes, written, 'the same blocks written (trimmed ones counted alike)')
  t.same(await mapRows(scanned, seq), rows, 'the same location and CRC for every block')
  t.equal(await contentIdentity(scanned, seq), identity, 'the same content identity')
  await scribble(scanned, model, 50)
  await scanned.close()
  const again = await openChecked(t, dir, model, atSnapshot, 'writes after a load')
  t.same(again.recovery.blockMap, { from: 'saved' })
  await again.close()
})

t.test('a read-only open loads the map and keeps it; a write open takes it', { timeout: 120_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const bytes = fs.readFileSync(mapFile(dir))
  // Why a read-only open may keep the file: it cannot change the index the file describes.
  const indexFiles = (): Record<string, string> => Object.fromEntries(fs.readdirSync(path.join(dir, 'index')).sort()
    .map(n => [n, crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, 'index', n))).digest('hex')]))
  const before = indexFiles()
  for (let i = 0; i < 2; i++) {
    const { store } = await openStore(dir, {}, [], 'read')
    t.same(store.recovery.blockMap, { from: 'saved' }, `read-only open ${i + 1} loaded it`)
    await assertImage(t, store, model, 'read-only open')
    await store.close()
    t.ok(fs.readFileSync(mapFile(dir)).equals(bytes), 'the file is still there, unchanged')
    t.same(indexFiles(), before, 'not one byte of the index changed')
  }
  let { store } = await openStore(dir)
  t.same(store.recovery.blockMap, { from: 'saved' })
  t.notOk(fs.existsSync(mapFile(dir)), 'a write open deleted it')
  await store.close()
  ;({ store } = await openStore(dir))
  t.same(store.recovery.blockMap, { from: 'saved' }, 'and its close saved it again')
  await assertImage(t, store, model, 'after the write open')
  t.ok((await store.readSnapshot('a', 0, SIZE)).equals(atSnapshot.image()))
  await store.close()
})

/** The saved file with one change, its CRC made good again when `fixCrc`. */
function edited (file: Buffer, edit: (b: Buffer) => Buffer, fixCrc: boolean): Buffer {
  const b = edit(Buffer.from(file))
  if (fixCrc) b.writeUInt32LE(crc32c(b.subarray(0, b.length - 4)), b.length - 4)
  return b
}

/** Rewrites the stamp JSON (same length: digits changed in place) with good CRCs (the header's, version 2, and the file's). */
function restamped (file: Buffer, change: (stamp: Record<string, unknown>) => void): Buffer {
  const length = file.readUInt32LE(12)
  const stamp = JSON.parse(file.subarray(16, 16 + length).toString())
  change(stamp)
  const json = Buffer.from(JSON.stringify(stamp))
  if (json.length !== length) throw new Error('the test keeps the stamp length')
  return edited(file, b => {
    json.copy(b, 16)
    b.writeUInt32LE(crc32c(b.subarray(0, 16 + length)), 16 + length)
    return b
  }, true)
}

/** Where the table starts in a saved map of version 2 (the header's CRC follows the stamp). */
const tableAt = (file: Buffer): number => 16 + Math.ceil((file.readUInt32LE(12) + 4) / 8) * 8

t.test('a damaged, truncated, other-version or stale file is not used, and the store is right', { timeout: 300_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const good = fs.readFileSync(mapFile(dir))
  // Every case starts from the store as the clean close left it (an open moves the checkpoint).
  const pristine = `${dir}.pristine`
  fs.cpSync(dir, pristine, { recursive: true })
  t.teardown(() => fs.rmSync(pristine, { recursive: true, force: true }))
  const restore = (): void => {
    fs.rmSync(dir, { recursive: true })
    fs.cpSync(pristine, dir, { recursive: true })
  }
  const slotsAt = tableAt(good)
  const cases: Array<[string, Buffer, RegExp]> = [
    ['a flipped byte in the table', edited(good, b => { b[slotsAt + 1000] ^= 0x40; return b }, false), /checksum mismatch/],
    ['a flipped byte in the stamp', edited(good, b => { b[20] ^= 0x01; return b }, false), /checksum|stamp unreadable/],
    ['truncated by a page', good.subarray(0, good.length - 4096), /do not hold/],
    ['truncated inside the header', good.subarray(0, 10), /no header/],
    ['empty', Buffer.alloc(0), /no header/],
    ['another version', edited(good, b => { b.writeUInt32LE(BLOCK_MAP_FILE_VERSION_DENSE + 1, 8); return b }, true), /version/],
    ['another magic', edited(good, b => { b.write('XXXXXXXX', 0); return b }, true), /no header/],
    ['a stamp of another checkpoint time', restamped(good, s => { s.timeMs = (s.timeMs as number) + 1 }), /stale/],
    ['a stamp of another sequence number', restamped(good, s => { s.seq = (s.seq as number) - 1 }), /stale/],
    ['a stamp of another store', restamped(good, s => { s.uuid = String(s.uuid).replace(/^./, c => c === 'a' ? 'b' : 'a') }), /stale.*belongs/],
    // A good checksum over a table that lies: in the dense layout (version 3: this store's
    // 2048 blocks are 40 KiB of rows, smaller than the hash table), a row that is no position.
    ...good.readUInt32LE(8) === BLOCK_MAP_FILE_VERSION_DENSE ? [['a dense row that is not a position', edited(good, b => {
      const rows = new Float64Array(b.buffer.slice(b.byteOffset + slotsAt, b.byteOffset + slotsAt + 8 * BLOCKS))
      b.writeDoubleLE(-7, slotsAt + rows.indexOf(0) * 8)
      return b
    }, true), /refused/] as [string, Buffer, RegExp]] : [],
    // In the hash layout (version 2), a key moved out of its probe run.
    ...good.readUInt32LE(8) === BLOCK_MAP_FILE_VERSION ? [['a table that is not a hash table', edited(good, b => {
      const keys = new Float64Array(b.buffer.slice(b.byteOffset + slotsAt, b.byteOffset + slotsAt + 8 * 1024))
      let from = keys.findIndex(k => k >= 0)
      let to = from
      while (keys[to] !== -1) to++
      to = (to + 7) % keys.length // into another run, past an empty slot
      while (keys[to] !== -1) to = (to + 1) % keys.length
      b.writeDoubleLE(keys[from], slotsAt + to * 8)
      b.writeDoubleLE(-1, slotsAt + from * 8)
      from = to
      return b
    }, true), /refused/] as [string, Buffer, RegExp]] : []
  ]
  for (const [what, bytes, why] of cases) {
    restore()
    fs.writeFileSync(mapFile(dir), bytes)
    const store = await openChecked(t, dir, model, atSnapshot, what)
    t.equal(store.recovery.blockMap.from, 'index', `${what}: not used`)
    t.match(store.recovery.blockMap.why ?? '', why, `${what}: says why (${store.recovery.blockMap.why})`)
    t.notOk(fs.existsSync(mapFile(dir)), `${what}: deleted by the write open`)
    await store.close()
  }
  restore()
  const store = await openChecked(t, dir, model, atSnapshot, 'the good file again')
  t.same(store.recovery.blockMap, { from: 'saved' }, 'the untouched file is used')
  await store.close()
})

t.test('an open that does not know the file (an older release) makes it stale', { timeout: 120_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const saved = fs.readFileSync(mapFile(dir))
  // An older release: opens with the file there but ignores it (here: moved away and put
  // back), writes, closes without saving one.
  const older = async (fn: (s: Store) => Promise<void>): Promise<void> => {
    fs.rmSync(mapFile(dir))
    const s = await Store.open(dir, { checkpointIntervalMs: 0 })
    await fn(s)
    await s.close()
    fs.rmSync(mapFile(dir))
    fs.writeFileSync(mapFile(dir), saved)
  }
  await older(async () => {}) // opened and closed, nothing written: the checkpoint time moved
  let store = await openChecked(t, dir, model, atSnapshot, 'after an older release opened it')
  t.equal(store.recovery.blockMap.from, 'index')
  t.match(store.recovery.blockMap.why ?? '', /stale/)
  await store.close()
  await older(async s => { await scribble(s, model, 100); await s.flush() })
  store = await openChecked(t, dir, model, atSnapshot, 'after an older release wrote')
  t.equal(store.recovery.blockMap.from, 'index', 'the stale map is not used: the writes are seen')
  await store.close()
})

t.test('an index rebuilt from the log drops the file', { timeout: 120_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  // The LevelDB files go (the documented way to rebuild the index), the map file stays behind.
  for (const name of fs.readdirSync(path.join(dir, 'index'))) if (name !== BLOCK_MAP_FILE) fs.rmSync(path.join(dir, 'index', name))
  const store = await openChecked(t, dir, model, atSnapshot, 'rebuilt index')
  t.equal(store.recovery.blockMap.from, 'log')
  t.ok(store.recovery.rebuiltIndex)
  t.notOk(fs.existsSync(mapFile(dir)), 'the file is gone')
  await store.close()
})

t.test('a crash while saving leaves a temporary file that is never used', { timeout: 120_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const good = fs.readFileSync(mapFile(dir))
  // Killed before the rename: only the temporary file (whole or not) is there.
  fs.renameSync(mapFile(dir), mapFile(dir) + '.tmp')
  let store = await openChecked(t, dir, model, atSnapshot, 'temporary file only')
  t.equal(store.recovery.blockMap.from, 'index')
  t.notOk(fs.existsSync(mapFile(dir) + '.tmp'), 'the write open removed the temporary file')
  await store.close()
  // Killed after the rename (the directory not yet synced): the whole file is there, and good.
  fs.writeFileSync(mapFile(dir) + '.tmp', good.subarray(0, 100))
  store = await openChecked(t, dir, model, atSnapshot, 'a whole file and a torn temporary one')
  t.same(store.recovery.blockMap, { from: 'saved' })
  t.same(fs.readdirSync(path.join(dir, 'index')).filter(n => n.startsWith(BLOCK_MAP_FILE)), [BLOCK_MAP_BASE_FILE], 'the temporary file removed; the map waits as the base of the next delta, under another name')
  await store.close()
})

t.test('kill -9 of a process that loaded the map: the next open does not reuse it', { timeout: 180_000, skip: fs.existsSync(DIST_STORE) ? false : 'run make build first (dist/ is missing)' }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const data = rng.bytes(8 * B)
  const script = `
    const { Store } = require(${JSON.stringify(DIST_STORE)})
    ;(async () => {
      const store = await Store.open(${JSON.stringify(dir)}, { checkpointIntervalMs: 0 })
      if (store.recovery.blockMap.from !== 'saved') throw new Error('not loaded: ' + JSON.stringify(store.recovery.blockMap))
      await store.write(${100 * B}, Buffer.from(${JSON.stringify(data.toString('base64'))}, 'base64'))
      await store.flush()
      process.stdout.write('ready\\n')
      setInterval(() => {}, 1000)
    })().catch(err => { console.error(err); process.exit(2) })`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr.on('data', d => { err += String(d) })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', d => { if (String(d).includes('ready')) resolve() })
    child.on('exit', code => reject(new Error(`child exited ${code}: ${err}`)))
  })
  t.notOk(fs.existsSync(mapFile(dir)), 'the file was deleted at open')
  child.kill('SIGKILL')
  await new Promise(resolve => child.on('exit', resolve))
  model.write(100, data)
  const store = await openChecked(t, dir, model, atSnapshot, 'after kill -9')
  t.equal(store.recovery.blockMap.from, 'index', 'the map came from the index and the log')
  await store.close()
})

t.test('a copied store: each copy loads its own map; adopt drops it', { timeout: 180_000 }, async t => {
  const base = tmpDir(t, 'saved-map-copy')
  const dir = path.join(base, 'original')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  let { store } = await openStore(dir, { checkpointIntervalMs: 0 })
  const model = new Model()
  await scribble(store, model, 200)
  await store.snapshot({ name: 'a' })
  const atSnapshot = model.clone()
  await store.close()
  const copy = path.join(base, 'copy')
  fs.cpSync(dir, copy, { recursive: true })
  // The original moves on; the copy keeps what it was.
  ;({ store } = await openStore(dir, { checkpointIntervalMs: 0 }))
  const moved = model.clone()
  await scribble(store, moved, 100)
  await store.close()
  ;({ store } = await openStore(copy, {}, [], 'read'))
  t.same(store.recovery.blockMap, { from: 'saved' }, 'a read-only open of the copy loads its map')
  await assertImage(t, store, model, 'the copy')
  await store.close()
  ;({ store } = await openStore(dir, {}, [], 'read'))
  await assertImage(t, store, moved, 'the original')
  await store.close()
  await t.rejects(openStore(copy), { code: 'IDENTITY' }, 'a write open of the copy is refused before anything')
  t.ok(fs.existsSync(mapFile(copy)), 'the refused open left the copy\'s file alone')
  await adoptStore(copy)
  t.notOk(fs.existsSync(mapFile(copy)), 'adopt dropped it (it changes the index without opening the store)')
  ;({ store } = await openStore(copy, { checkpointIntervalMs: 0 }))
  t.equal(store.recovery.blockMap.from, 'index')
  await assertImage(t, store, model, 'the adopted copy')
  t.ok((await store.readSnapshot('a', 0, SIZE)).equals(atSnapshot.image()))
  await store.close()
})

t.test('content identity from the mapped blocks equals the walk of every version (blocks past 2^32 too)', { timeout: 120_000 }, async t => {
  const dir = tmpDir(t)
  // A sparse 64 TiB volume: block numbers past 2^32 take the Float64 path of the sort.
  const size = 64 * 2 ** 40
  await Store.create(dir, { sizeBytes: size, blockBytes: B, segmentBytes: SEGMENT })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  const far = [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 3 * 2 ** 32 + 7, size / B - 1]
  for (const b of far) await store.write(b * B, rng.bytes(B))
  for (let i = 0; i < 300; i++) await store.write(rng.int(5000) * B, rng.bytes(B))
  await store.write(17 * B, Buffer.alloc(B)) // a zero block: left out of the identity
  const cut1 = (await store.snapshot({ name: 'a' })).seq
  for (let i = 0; i < 100; i++) await store.write(rng.int(5000) * B, rng.bytes(B)) // rewritten since the cut
  await store.discard(2 ** 32 * B, B)
  await store.discard(0, 20 * B)
  const cut2 = (await store.snapshot({ name: 'b' })).seq
  for (const b of far) await store.write(b * B, rng.bytes(B))
  const zeroCrc = crc32c(Buffer.alloc(B))
  const cuts = [cut1, cut2, store.status().index.seq]
  const together = await contentIdentities(store, cuts)
  for (const [k, seq] of cuts.entries()) {
    t.equal(together[k], await contentIdentity(store, seq), `one walk for several cuts: the same identity at seq ${seq}`)
    // Reference: the hash over blockCrcsAt, a pass over every version in the index.
    const hash = crypto.createHash('sha256')
    const geometry = Buffer.alloc(16)
    geometry.writeBigUInt64LE(BigInt(size), 0)
    geometry.writeBigUInt64LE(BigInt(B), 8)
    hash.update(geometry)
    for await (const [block, crc] of store.blockCrcsAt(seq)) {
      if (crc === zeroCrc) continue
      const row = Buffer.alloc(12)
      row.writeUInt32LE(block % 0x100000000, 0)
      row.writeUInt32LE(Math.floor(block / 0x100000000), 4)
      row.writeUInt32LE(crc, 8)
      hash.update(row)
    }
    t.equal(await contentIdentity(store, seq), `c1-${hash.digest('hex').slice(0, 40)}`, `identity at seq ${seq}`)
  }
  await store.close()
})

t.test('BlockMap.adopt refuses tables a lookup would misread; sortedBlocks sorts', async t => {
  const m = new BlockMap(16)
  for (const b of [5, 21, 37, 2 ** 33, 0]) m.set(b, b * 10, b % 7, 1)
  m.set(21, -2, 0, 2) // trimmed
  const tables = m.tables()
  const copy = (): ReturnType<BlockMap['tables']> & { keys: Float64Array } => ({ keys: tables.keys!.slice(), positions: tables.positions.slice(), crcs: tables.crcs.slice(), seqs: tables.seqs.slice() })
  const fresh = new BlockMap()
  t.equal(fresh.adopt(copy()), undefined)
  t.equal(fresh.count, 5)
  t.equal(fresh.trimmed, 1)
  t.equal(fresh.position(37), 370)
  t.equal(fresh.position(2 ** 33), 2 ** 33 * 10)
  t.equal(fresh.position(6), -1)
  t.same([...fresh.sortedBlocks()], [0, 5, 21, 37, 2 ** 33])
  const odd = copy()
  t.match(new BlockMap().adopt({ ...odd, keys: odd.keys.subarray(0, 15) }), /power of two/)
  const short = copy()
  t.match(new BlockMap().adopt({ ...short, crcs: short.crcs.subarray(0, 8) }), /differ in length/)
  const frac = copy()
  frac.keys[frac.keys.findIndex(k => k === 5)] = 5.5
  t.match(new BlockMap().adopt(frac), /not a block number/)
  const full = copy()
  for (let i = 0; i < 16; i++) if (full.keys[i] === -1) full.keys[i] = 1000 + i
  t.ok(new BlockMap().adopt(full), 'overfull or misplaced: refused')
})

t.test('old stores (no saved map) open as before; the file format is pinned', { timeout: 60_000 }, async t => {
  // test/fixtures/blockmap-1: a map of version 1 as this release wrote it.
  const fixture = path.join(FIXTURES, 'blockmap-1')
  const taken = await takeBlockMap(nodeFileLayer, fixture, true)
  if (!('saved' in taken)) throw new Error(taken.why)
  t.same({ ...taken.saved.stamp }, { uuid: '00000000-0000-4000-8000-000000000001', blockBytes: 4096, seq: 42, position: 1234567, timeMs: 1796169600000, slots: 16 })
  const m = new BlockMap()
  t.equal(m.adopt(taken.saved.tables!), undefined)
  t.same([...m.sortedBlocks()].map(b => [b, m.position(b), m.crc(b), m.seq(b)]), [[3, 8192, 11, 5], [9, -2, 0, 7], [2 ** 40, 40960, 22, 9]])
  t.ok(fs.existsSync(path.join(fixture, BLOCK_MAP_FILE)), 'a kept take leaves the fixture alone')
})

const indexFiles = (dir: string): string[] => fs.readdirSync(path.join(dir, 'index')).filter(n => n.startsWith(BLOCK_MAP_FILE)).sort()

/** Every mapped block's rows as the index history gives them (a second open without the files). */
async function rowsFromIndex (t: Test, dir: string): Promise<number[]> {
  const copy = tmpDir(t)
  fs.cpSync(dir, copy, { recursive: true })
  const s = await Store.open(copy, { checkpointIntervalMs: 0, savedBlockMap: false })
  try {
    t.equal(s.recovery.blockMap.from, 'index')
    return await mapRows(s, s.status().index.seq)
  } finally {
    await s.close()
  }
}

t.test('a close after few changes saves a delta beside the unchanged base; opens load base and delta; the map equals the index', { timeout: 180_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  const base = fs.readFileSync(mapFile(dir))
  let store = await openChecked(t, dir, model, atSnapshot, 'loaded')
  t.same(indexFiles(dir), [BLOCK_MAP_BASE_FILE], 'while open for writing there is no blockmap, only the base')
  await scribble(store, model, 20)
  await store.snapshot({ name: 'b' })
  const atB = model.clone()
  await scribble(store, model, 20) // trims among them
  await store.close()
  t.same(indexFiles(dir), [BLOCK_MAP_FILE, BLOCK_MAP_DELTA_FILE], 'a delta beside the map')
  t.ok(fs.readFileSync(mapFile(dir)).equals(base), 'the map file is the base, not rewritten')
  t.ok(fs.statSync(path.join(dir, 'index', BLOCK_MAP_DELTA_FILE)).size < base.length / 4, 'the delta is small (a quarter of a dense base of 2048 rows)')

  for (const round of [1, 2]) {
    const expected = await rowsFromIndex(t, dir) // the store as it is closed, its map read from the index history
    store = await openChecked(t, dir, model, atSnapshot, `base and delta, round ${round}`)
    t.same(store.recovery.blockMap, { from: 'saved' }, 'loaded from base and delta')
    t.ok((await store.readSnapshot('b', 0, SIZE)).equals(atB.image()), 'snapshot b reads back')
    t.same(await mapRows(store, store.status().index.seq), expected, 'the map from base and delta equals the index history, row for row')
    await scribble(store, model, 10) // the next delta holds these and the earlier ones
    await store.close()
    // (A compaction pass that moved many blocks meanwhile makes the close save the whole map.)
    const files = indexFiles(dir)
    if (files.length === 2) {
      t.same(files, [BLOCK_MAP_FILE, BLOCK_MAP_DELTA_FILE], 'still a delta')
      t.ok(fs.readFileSync(mapFile(dir)).equals(base), 'on the same base')
    } else {
      t.same(files, [BLOCK_MAP_FILE], 'or the whole map')
    }
  }
  store = await openChecked(t, dir, model, atSnapshot, 'after two deltas')
  t.same(store.recovery.blockMap, { from: 'saved' })
  await store.close()
})

t.test('a stale, damaged or foreign delta is not used, and the store is right', { timeout: 180_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  let store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 10)
  await store.close()
  const firstDelta = fs.readFileSync(path.join(dir, 'index', BLOCK_MAP_DELTA_FILE))
  store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 10)
  await store.close()

  // An older delta of the same base: its stamp is not the index's checkpoint.
  fs.writeFileSync(path.join(dir, 'index', BLOCK_MAP_DELTA_FILE), firstDelta)
  store = await openChecked(t, dir, model, atSnapshot, 'an older delta')
  t.equal(store.recovery.blockMap.from, 'index', 'not used')
  t.match(store.recovery.blockMap.why ?? '', /stale/)
  await store.close()
  t.same(indexFiles(dir), [BLOCK_MAP_FILE], 'the close saved the whole map again')

  // A damaged delta: not used; the base alone is stale.
  store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 10)
  await store.close()
  const deltaFile = path.join(dir, 'index', BLOCK_MAP_DELTA_FILE)
  const delta = fs.readFileSync(deltaFile)
  delta[delta.length - 10] ^= 0x01
  fs.writeFileSync(deltaFile, delta)
  store = await openChecked(t, dir, model, atSnapshot, 'a damaged delta')
  t.equal(store.recovery.blockMap.from, 'index', 'not used')
  await scribble(store, model, 10)
  await store.close()

  // A delta whose base is another map (the base rewritten since, as an older release's close does).
  store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 10)
  await store.close()
  const foreign = fs.readFileSync(deltaFile)
  store = await Store.open(dir, { checkpointIntervalMs: 0, savedBlockMap: false }) // an open that knows no saved map
  await store.close()
  store = await Store.open(dir, { checkpointIntervalMs: 0 }) // loads nothing (stale); saves the whole map
  await store.close()
  t.same(indexFiles(dir), [BLOCK_MAP_FILE])
  fs.writeFileSync(deltaFile, foreign)
  store = await openChecked(t, dir, model, atSnapshot, 'a delta of another base')
  t.same(store.recovery.blockMap, { from: 'saved' }, 'the map alone is used: the delta names another base')
  await store.close()
})

t.test('a crash while open for writing leaves only the base: never used; many changes save the whole map', { timeout: 180_000 }, async t => {
  const { dir, model, atSnapshot } = await madeStore(t)
  let store = await Store.open(dir, { checkpointIntervalMs: 0 })
  await scribble(store, model, 10)
  await store.flush()
  await store.abandon()
  t.same(indexFiles(dir), [BLOCK_MAP_BASE_FILE], 'the base is left, no blockmap')
  store = await openChecked(t, dir, model, atSnapshot, 'after a crash')
  t.equal(store.recovery.blockMap.from, 'index', 'the base is not used')
  t.same(indexFiles(dir), [], 'and removed')
  await store.close()
  t.same(indexFiles(dir), [BLOCK_MAP_FILE])

  store = await Store.open(dir, { checkpointIntervalMs: 0 })
  const slots = (store as unknown as { p: { map: { tables: () => { positions: Float64Array } } } }).p.map.tables().positions.length
  const limit = deltaLimit(slots)
  // More distinct blocks than a delta may hold.
  for (let b = 0; b <= limit && b < BLOCKS; b += 1) {
    const data = rng.bytes(B)
    await store.write(b * B, data)
    model.write(b, data)
  }
  await store.close()
  if (limit < BLOCKS) t.same(indexFiles(dir), [BLOCK_MAP_FILE], 'past the limit the whole map is saved, base and delta gone')
  store = await openChecked(t, dir, model, atSnapshot, 'after many changes')
  t.same(store.recovery.blockMap, { from: 'saved' })
  await store.close()
})

t.test('a delta of version 1 is pinned: the fixture reads as the release that wrote it made it', async t => {
  // test/fixtures/blockmap-delta-1 (make-blockmap-delta-1.mjs): a base and a delta on it.
  const fixture = path.join(FIXTURES, 'blockmap-delta-1')
  const taken = await takeBlockMap(nodeFileLayer, fixture, true)
  if (!('saved' in taken)) throw new Error(taken.why)
  t.same({ ...taken.saved.stamp }, { uuid: '00000000-0000-4000-8000-000000000002', blockBytes: 4096, seq: 45, position: 1300000, timeMs: 1796169700000, slots: 16 }, 'the stamp is the delta\'s')
  t.equal(taken.saved.delta?.keys.length, 4, 'four rows')
  const m = new BlockMap()
  t.equal(adoptSavedMap(m, taken.saved), undefined)
  t.same([...m.sortedBlocks()].map(b => [b, m.position(b), m.crc(b), m.seq(b)]), [[3, 53248, 66, 44], [5, 49152, 55, 43], [9, -2, 0, 45], [2 ** 40, 40960, 22, 9]])
  t.same(fs.readdirSync(fixture).sort(), [BLOCK_MAP_FILE, BLOCK_MAP_DELTA_FILE], 'a kept take leaves the fixture alone')
  // The delta is used only with its base: beside another map (saved whole since) it is not.
  const dir = tmpDir(t)
  fs.cpSync(fixture, dir, { recursive: true })
  const delta = fs.readFileSync(path.join(dir, BLOCK_MAP_DELTA_FILE))
  await saveBlockMap(nodeFileLayer, dir, m, { uuid: '00000000-0000-4000-8000-000000000002', blockBytes: 4096 }, { seq: 50, position: 1400000, timeMs: 1796169800000 })
  fs.writeFileSync(path.join(dir, BLOCK_MAP_DELTA_FILE), delta) // (saving whole removed it)
  const other = await takeBlockMap(nodeFileLayer, dir, true)
  if (!('saved' in other)) throw new Error(other.why)
  t.equal(other.saved.delta, undefined, 'the delta of another base is not used')
  t.equal(other.saved.stamp.seq, 50, 'the map alone, with its own stamp')
})
