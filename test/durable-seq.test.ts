import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { decodeHeader, entryBytes } from '../src/store/entry'
import { ENTRY_HEADER_BYTES, ENTRY_VERSION, EntryKind, STORE_FORMAT_VERSION, inFlightBytes, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { FIXTURES } from './helpers/paths'
import { scratchDir, writeRandom } from './helpers/sim-layer'

/**
 * The other side of attack3-torn-beyond-reach and attack3-rebuild-torn-sealed: entries record
 * how far a completed flush had made the log durable (`durableSeq`, store format 3), and
 * recovery cuts a bad entry as a torn write only when no later entry records it as flushed.
 * Bit rot in an entry a later entry records as flushed is damage: kept, its blocks read EIO,
 * verify reports it; never silently cut, even where recovery's rule for older releases
 * (entries within inFlightBytes after it) would have cut it.
 */
const B = 4096

t.test('entries record durableSeq: the last entry a completed flush covered when they were written', async t => {
  const dir = scratchDir(t, 'durable-seq')
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: 1024 * 1024, blockBytes: B, segmentBytes: 2 * 1024 * 1024 }, sim)
  const store = await Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const rng = new Rng(0xd5)
  const at = (): number => store.status().index.position % (2 * 1024 * 1024)
  const first = at()
  await store.write(0, rng.bytes(B)) // seq 1
  await store.write(B, rng.bytes(B)) // seq 2: nothing flushed yet
  await store.flush()
  const third = at()
  await store.write(2 * B, rng.bytes(B)) // seq 3: 1 and 2 flushed
  await store.abandon()
  const file = await sim.open(path.join(dir, 'segments', segmentFileName(0)), false)
  const header = async (offset: number): Promise<ReturnType<typeof decodeHeader>> => {
    const buf = Buffer.alloc(ENTRY_HEADER_BYTES)
    await file.read(buf, 0, ENTRY_HEADER_BYTES, offset)
    return decodeHeader(buf)
  }
  t.has(await header(first), { seq: 1, durableSeq: 0 }, 'the first entry: nothing durable before it')
  t.has(await header(third), { seq: 3, durableSeq: 2 }, 'after a flush: the entries it covered')
  const raw = Buffer.alloc(6)
  await file.read(raw, 0, 6, third)
  t.equal(raw[5], ENTRY_VERSION, 'entry version 2')
  await file.close()
  t.equal(JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')).format, STORE_FORMAT_VERSION, 'the current store format (3 and later)')
})

t.test('bit rot in an entry a later entry records as flushed is damage: kept, reads EIO, verify reports it', async t => {
  const dir = scratchDir(t, 'durable-rot')
  const SEGMENT = 4096 + 16 * 1024 * 1024
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: 4 * 1024 * 1024, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0x0b17)
  const X = 3
  const start = store.status().index.position % SEGMENT
  await store.write(X * B, rng.bytes(4 * B))
  await store.flush() // durable; the index checkpoint does not cover it (replay reads it)
  const other = rng.bytes(2 * B)
  await store.write(64 * B, other) // records the write above as flushed
  await store.flush()
  await store.abandon()
  t.ok(store.status().index.position % SEGMENT - start < inFlightBytes(B), 'the later entry is within inFlightBytes: the older rule would cut the rotten one as a torn write')
  // One byte of X+1's flushed data flips on the disk.
  const flip = start + ENTRY_HEADER_BYTES + 4 * 4 + B + 100
  const seg0 = path.join(dir, 'segments', segmentFileName(0))
  const file = await sim.open(seg0, false)
  const byte = Buffer.alloc(1)
  await file.read(byte, 0, 1, flip)
  await file.close()
  sim.poke(seg0, flip, Buffer.from([byte[0] ^ 0x40]))
  sim.crash(rng)
  const again = await open()
  t.equal(again.recovery.cut, undefined, 'nothing cut')
  const err = await again.read((X + 1) * B, B).then(() => undefined, (e: unknown) => e)
  t.ok(isLogdiskError(err, 'CORRUPT'), `the rotten block reads CORRUPT (EIO): ${(err as Error | undefined)?.message}`)
  t.ok((await again.read(64 * B, 2 * B)).equals(other), 'the later write, kept')
  const report = await again.verify()
  t.notOk(report.ok, 'verify reports the damage')
  t.match(report.problems.join('; '), new RegExp(`block ${X + 1} fails its checksum`), 'naming the block')
  await again.close()
})

t.test('a full rebuild: an unreadable header in a flushed sealed segment, recorded as flushed by the next segment, is damage (nothing cut or moved aside)', async t => {
  const dir = scratchDir(t, 'durable-rot-sealed')
  const SEGMENT = 1024 * 1024 + 64 * 1024
  const SIZE = 4 * 1024 * 1024
  const sim = new SimFileLayer()
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, checkpointIntervalMs: 0 })
  const store = await open()
  const rng = new Rng(0x5ea1)
  const model = Buffer.alloc(SIZE)
  while (store.status().index.position % SEGMENT < 0.5 * SEGMENT) await writeRandom(store, model, rng, 16)
  const rotAt = store.status().index.position % SEGMENT // the header of the next entry
  while (Math.floor(store.status().index.position / SEGMENT) === 0) await writeRandom(store, model, rng, 16)
  await store.flush() // everything durable
  for (let i = 0; i < 5; i++) await writeRandom(store, model, rng, 16) // segment 1 records segment 0 as flushed
  await store.flush()
  await store.abandon()
  sim.poke(path.join(dir, 'segments', segmentFileName(0)), rotAt, Buffer.alloc(16)) // the magic and kind rot away
  sim.crash(rng)
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, 'index'))
  const again = await open()
  t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.equal(again.recovery.cut, undefined, 'nothing cut')
  t.same(again.recovery.orphanedSegments, [], 'nothing moved aside')
  t.same(again.recovery.damaged.map(d => [d.segment, d.offset, d.reason]), [[0, rotAt, 'not an entry header']], 'the damage is reported')
  const report = await again.verify()
  t.notOk(report.ok, 'verify reports it')
  t.match(report.problems.join('; '), /not an entry header/, 'as the unreadable header')
  await again.close()
})

t.test('a store of format 2 (entries without durableSeq): the older rule stays, and the first append makes it format 3', async t => {
  const dir = scratchDir(t, 'durable-legacy')
  fs.cpSync(path.join(FIXTURES, 'format-2'), dir, { recursive: true })
  const format = (): number => JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')).format
  // Bit rot in the last write entry of sealed segment 1 (an older release's version-1 entries).
  const seg1 = path.join(dir, 'segments', segmentFileName(1))
  const bytes = fs.readFileSync(seg1)
  let last: { offset: number, count: number } | undefined
  for (let at = 4096; at + ENTRY_HEADER_BYTES <= bytes.length;) {
    const h = decodeHeader(bytes, at)
    if (!h) break
    t.equal(h.durableSeq, undefined, `entry seq ${h.seq}: version 1, no durableSeq`)
    if (h.kind === EntryKind.write) last = { offset: at, count: h.count }
    at += entryBytes(h)
  }
  if (!last) throw new Error('no write entry in segment 1')
  const flip = last.offset + ENTRY_HEADER_BYTES + 4 * last.count + 7
  bytes[flip] ^= 0x10
  fs.writeFileSync(seg1, bytes)
  const rebuild = async (): Promise<Store> => {
    fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
    return Store.open(dir, { checkpointIntervalMs: 0 })
  }
  let store = await rebuild()
  t.equal(store.recovery.cut, undefined, 'nothing cut: damage inside the log (version-1 entries follow it in later segments)')
  t.match((await store.verify()).problems.join('; '), /fails its checksum/, 'verify reports it')
  t.equal(format(), 2, 'opening changes no format')
  await store.write(900 * B, Buffer.alloc(B, 7))
  t.equal(format(), STORE_FORMAT_VERSION, 'the first append makes the store the current format (3 and later)')
  await store.close()
  store = await rebuild()
  t.equal(store.recovery.cut, undefined, 'rebuilt again, with a version-2 entry after it: still damage, not cut')
  t.match((await store.verify()).problems.join('; '), /fails its checksum/, 'verify still reports it')
  t.ok((await store.read(900 * B, B)).equals(Buffer.alloc(B, 7)), 'the new write reads back')
  await store.close()
})
