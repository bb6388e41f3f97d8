import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { BlockMap } from '../src/store/block-map'
import { crc32c } from '../src/store/crc'
import { blockCrcAt, decodeHeader, encodeMarker, encodeWriteHeader, entryBytes, verifyHeader } from '../src/store/entry'
import { ENTRY_HEADER_BYTES, EntryKind, SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

const SEED = Number(process.env.STORE_SEED ?? 0x57013)
const B = 4096
const SIZE = 8 * 1024 * 1024
const SEGMENT = 1024 * 1024 + 64 * 1024 // the smallest round size that fits a 256-block entry

t.comment(`seed ${SEED} (rerun with STORE_SEED=${SEED})`)
const rng = new Rng(SEED)

function tmpDir (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-store-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A new store in a fresh tmp dir; closed and removed when the test ends. */
async function fresh (t: Test, sizeBytes = SIZE): Promise<{ dir: string, store: Store, reopen: () => Promise<Store> }> {
  const dir = tmpDir(t)
  await Store.create(dir, { sizeBytes, blockBytes: B, segmentBytes: SEGMENT })
  const stores: Store[] = []
  const reopen = async (): Promise<Store> => {
    const s = await Store.open(dir, { checkpointIntervalMs: 0 })
    stores.push(s)
    return s
  }
  t.teardown(async () => { for (const s of stores) await s.close().catch(() => undefined) })
  return { dir, store: await reopen(), reopen }
}

const segmentFile = (dir: string, id: number): string => path.join(dir, 'segments', segmentFileName(id))

t.test('never-written blocks read as zeros', async t => {
  const { store } = await fresh(t)
  t.ok((await store.read(0, SIZE)).equals(Buffer.alloc(SIZE)), 'a new volume is all zeros')
  const data = rng.bytes(3 * B)
  await store.write(10 * B, data)
  const all = await store.read(0, SIZE)
  t.ok(all.subarray(0, 10 * B).equals(Buffer.alloc(10 * B)), 'blocks before the write are zeros')
  t.ok(all.subarray(10 * B, 13 * B).equals(data), 'the written blocks')
  t.ok(all.subarray(13 * B).equals(Buffer.alloc(SIZE - 13 * B)), 'blocks after the write are zeros')
  t.ok((await store.read(11 * B - 5, 10)).equals(data.subarray(B - 5, B + 5)), 'a small read across a block edge')
})

t.test('reads stop at the end of the volume; writes past it change nothing', async t => {
  const { store } = await fresh(t)
  const tail = rng.bytes(B)
  await store.write(SIZE - B, tail)
  const got = await store.read(SIZE - 100, 1000)
  t.equal(got.length, 100, 'a read across the end is cut short')
  t.ok(got.equals(tail.subarray(B - 100)))
  t.equal((await store.read(SIZE, 10)).length, 0, 'a read at the end is empty')
  t.equal((await store.read(SIZE + B, 10)).length, 0, 'a read past the end is empty')
  await t.rejects(store.write(SIZE - 10, rng.bytes(11)), { code: 'OUT_OF_RANGE' })
  await t.rejects(store.write(SIZE, rng.bytes(1)), { code: 'OUT_OF_RANGE' })
  await t.rejects(store.write(-1, rng.bytes(1)), { code: 'BAD_ARGUMENT' })
  t.ok((await store.read(SIZE - B, B)).equals(tail), 'the last block is unchanged')
  t.equal(store.status().index.seq, 1, 'nothing was appended to the log')
})

t.test('unaligned writes read, modify and write whole blocks', async t => {
  const { store } = await fresh(t)
  const model = Buffer.alloc(16 * B)
  const base = rng.bytes(8 * B)
  await store.write(0, base)
  base.copy(model, 0)
  // Inside one block; across two blocks; head and tail partial over many blocks; over
  // never-written blocks (their zeros must be kept around the new bytes).
  for (const [offset, length] of [[5000, 100], [B - 3, 7], [B + 1, 5 * B], [9 * B + 17, 3 * B + 5], [15 * B + 4000, 96]]) {
    const data = rng.bytes(length)
    await store.write(offset, data)
    data.copy(model, offset)
    t.ok((await store.read(0, 16 * B)).equals(model), `write ${length} bytes at ${offset}`)
  }
  t.ok((await store.read(5000, 100)).equals(model.subarray(5000, 5100)), 'an unaligned read')
})

t.test('a full segment rolls to the next; data reads back before and after reopen', async t => {
  const { store, reopen } = await fresh(t)
  const model = Buffer.alloc(SIZE)
  t.equal(store.status().segments.active, 0)
  for (let i = 0; i < 12; i++) {
    const data = rng.bytes(rng.range(32, 80) * B)
    const offset = rng.int(SIZE / B - data.length / B + 1) * B
    await store.write(offset, data)
    data.copy(model, offset)
  }
  const status = store.status()
  t.ok(status.segments.active >= 1, `rolled: ${status.segments.active} sealed segment(s)`)
  t.ok(status.logBytes > SEGMENT, 'the log is longer than one segment')
  t.ok(fs.existsSync(segmentFile(store.dir, 1)), 'the second segment file exists')
  t.ok((await store.read(0, SIZE)).equals(model), 'all data before reopen')
  await store.close()
  await t.rejects(store.read(0, B), { code: 'CLOSED' }, 'a closed store refuses reads')
  const again = await reopen()
  t.equal(again.status().segments.active, status.segments.active, 'the same segments after reopen')
  t.notOk(again.recovery.cut, 'a clean close leaves nothing to cut')
  t.ok((await again.read(0, SIZE)).equals(model), 'all data after reopen')
  t.ok((await again.verify()).ok)
})

t.test('a lost index is rebuilt from the log', async t => {
  const { dir, store, reopen } = await fresh(t)
  const model = Buffer.alloc(SIZE)
  for (let i = 0; i < 20; i++) {
    const data = rng.bytes(rng.range(1, 70 * B))
    const offset = rng.int(SIZE - data.length)
    await store.write(offset, data)
    data.copy(model, offset)
  }
  t.ok(store.status().segments.active >= 1, 'spans segments')
  await store.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  const again = await reopen()
  t.equal(again.recovery.rebuiltIndex, true, 'recovery reports the rebuild')
  t.notOk(again.recovery.cut)
  t.ok((await again.read(0, SIZE)).equals(model), 'all data after the rebuild')
  const report = await again.verify()
  t.ok(report.ok, `verify after the rebuild: ${report.problems.join('; ')}`)
  await again.close()
  const third = await reopen()
  t.equal(third.recovery.rebuiltIndex, false, 'the rebuilt index is used next time')
  t.ok((await third.read(0, SIZE)).equals(model))
})

t.test('a corrupted block is never served; other blocks are', async t => {
  const { dir, store, reopen } = await fresh(t)
  const a = rng.bytes(4 * B)
  const b = rng.bytes(2 * B)
  await store.write(0, a)
  await store.write(100 * B, b)
  await store.close()

  const file = segmentFile(dir, 0)
  const bytes = fs.readFileSync(file)
  const at = bytes.indexOf(a.subarray(2 * B, 3 * B)) // block 2's data in the log
  t.ok(at > SEGMENT_HEADER_BYTES, 'found block 2 in the segment file')
  const fd = fs.openSync(file, 'r+')
  fs.writeSync(fd, Buffer.from([bytes[at + 123] ^ 0x10]), 0, 1, at + 123)
  fs.closeSync(fd)

  const again = await reopen()
  await t.rejects(again.read(2 * B, B), { code: 'CORRUPT' }, 'the damaged block')
  await t.rejects(again.read(0, 4 * B), { code: 'CORRUPT' }, 'a read that covers it')
  t.ok((await again.read(0, 2 * B)).equals(a.subarray(0, 2 * B)), 'blocks 0-1 of the same entry')
  t.ok((await again.read(3 * B, B)).equals(a.subarray(3 * B)), 'block 3 of the same entry')
  t.ok((await again.read(100 * B, 2 * B)).equals(b), 'another entry')
  const report = await again.verify()
  t.equal(report.ok, false, 'verify reports the damage')
  t.ok(report.problems.length > 0 && report.problems.some(p => /block 2\b/.test(p)), `a problem line names block 2: ${JSON.stringify(report.problems)}`)
  // Overwriting the damaged block heals it.
  const fix = rng.bytes(B)
  await again.write(2 * B, fix)
  t.ok((await again.read(2 * B, B)).equals(fix), 'an overwritten damaged block reads the new data')
})

t.test('one store, one opener', async t => {
  const { dir, store } = await fresh(t)
  await t.rejects(Store.open(dir, { checkpointIntervalMs: 0 }), { code: 'STORE_LOCKED' }, 'a second open while open')
  await store.write(0, rng.bytes(B))
  await store.close()
  const again = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.pass('opens again once closed')
  await again.close()
})

t.test('missing and existing stores', async t => {
  const root = tmpDir(t)
  await t.rejects(Store.open(path.join(root, 'nope'), { checkpointIntervalMs: 0 }), { code: 'STORE_NOT_FOUND' }, 'a missing directory')
  await t.rejects(Store.open(root, { checkpointIntervalMs: 0 }), { code: 'STORE_NOT_FOUND' }, 'a directory without a store')
  const dir = path.join(root, 'store')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT })
  await t.rejects(Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEGMENT }), { code: 'STORE_EXISTS' })
  await t.rejects(Store.create(path.join(root, 'odd'), { sizeBytes: SIZE + 1, blockBytes: B }), { code: 'BAD_ARGUMENT' }, 'a size that is not whole blocks')
})

t.test('a torn tail is cut on open and kept in lost+found', async t => {
  for (const kind of ['garbage', 'half an entry']) {
    await t.test(kind, async t => {
      const { dir, store, reopen } = await fresh(t)
      const model = Buffer.alloc(SIZE)
      for (let i = 0; i < 5; i++) {
        const data = rng.bytes(rng.range(1, 8) * B)
        const offset = rng.int(SIZE / B - 8) * B
        await store.write(offset, data)
        data.copy(model, offset)
      }
      await store.close()

      const file = segmentFile(dir, 0)
      const size = fs.statSync(file).size
      let tail: Buffer
      if (kind === 'garbage') {
        tail = rng.bytes(777)
      } else {
        // The start of a copy of the first entry: a valid-looking header, data missing.
        const first = fs.readFileSync(file).subarray(SEGMENT_HEADER_BYTES)
        tail = Buffer.from(first.subarray(0, ENTRY_HEADER_BYTES + 4 + 1000))
      }
      fs.appendFileSync(file, tail)

      const again = await reopen()
      const cut = again.recovery.cut
      t.ok(cut, 'recovery reports a cut')
      t.equal(cut?.segment, 0)
      t.equal(cut?.offset, size, 'cut where the valid log ends')
      t.equal(cut?.bytes, tail.length)
      t.ok(cut?.savedTo.startsWith(path.join(dir, 'lost+found')), `saved under lost+found: ${cut?.savedTo}`)
      t.ok(cut && fs.readFileSync(cut.savedTo).equals(tail), 'the saved bytes are the cut tail')
      t.equal(fs.statSync(file).size, size, 'the segment is back to its valid length')
      t.ok((await again.read(0, SIZE)).equals(model), 'data intact')
      t.ok((await again.verify()).ok, 'verify ok after the cut')
      const more = rng.bytes(2 * B)
      await again.write(50 * B, more)
      more.copy(model, 50 * B)
      await again.close()
      const third = await reopen()
      t.notOk(third.recovery.cut, 'nothing more to cut')
      t.ok((await third.read(0, SIZE)).equals(model), 'data after writing past the cut')
    })
  }
})

t.test('BlockMap agrees with a Map over random operations', async t => {
  const map = new BlockMap(16)
  const ref = new Map<number, [number, number]>()
  const keyOf = (): number => {
    const r = rng.next()
    if (r < 0.5) return rng.int(4096) // dense: many collisions and deletes of present keys
    if (r < 0.7) return rng.int(64) * 2 ** 16 // 2^k apart
    if (r < 0.85) return 2 ** 32 + rng.int(1000) // above 32 bits
    return rng.int(2 ** 40)
  }
  let ops = 0
  const startMemory = map.memoryBytes
  for (let i = 0; i < 60000; i++) {
    const key = keyOf()
    const r = rng.next()
    if (r < 0.6) {
      const pos = rng.int(2 ** 45)
      const crc = (rng.next() * 2 ** 32) >>> 0
      map.set(key, pos, crc, i) // increasing seq: every set is the newest version
      ref.set(key, [pos, crc])
    } else if (r < 0.85) {
      if (map.delete(key) !== ref.delete(key)) { t.fail(`delete(${key}) disagrees at op ${i}`); return }
    } else {
      const want = ref.get(key)
      if (map.position(key) !== (want ? want[0] : -1) || (want && map.crc(key) !== want[1])) {
        t.fail(`get(${key}) disagrees at op ${i}`)
        return
      }
    }
    if (map.count !== ref.size) { t.fail(`count ${map.count} != ${ref.size} at op ${i}`); return }
    ops++
  }
  t.equal(ops, 60000)
  t.ok(map.memoryBytes > startMemory, 'the table grew')
  const seen = new Map<number, [number, number]>()
  map.forEach((block, position, crc) => seen.set(block, [position, crc]))
  t.same([...seen.entries()].sort((a, b) => a[0] - b[0]), [...ref.entries()].sort((a, b) => a[0] - b[0]), 'forEach lists exactly the live entries')
  for (const [key, [pos, crc]] of ref) {
    if (map.position(key) !== pos || map.crc(key) !== crc) { t.fail(`final lookup of ${key}`); return }
  }
  // Delete everything: the table must end empty and still answer.
  for (const key of [...ref.keys()]) map.delete(key)
  t.equal(map.count, 0)
  let left = 0
  map.forEach(() => { left++ })
  t.equal(left, 0, 'no entries left after deleting all')
  t.equal(map.position(123), -1)
})

t.test('entry headers round-trip and any flipped bit fails the check', async t => {
  const crcs = new Uint32Array([0, 0xffffffff, 0x12345678, crc32c(rng.bytes(B))])
  const seq = 2 ** 40 + 12345
  const timeMs = 1_763_000_000_123
  const block = 2 ** 35 + 7
  const buf = encodeWriteHeader(seq, timeMs, block, crcs, B)
  t.equal(buf.length, ENTRY_HEADER_BYTES + 4 * crcs.length)
  t.ok(verifyHeader(buf), 'a fresh header verifies')
  const h = decodeHeader(buf)
  t.same(h, { kind: EntryKind.write, seq, timeMs, block, count: crcs.length, payloadBytes: crcs.length * B, payloadCrc: 0 })
  t.equal(entryBytes(h!), ENTRY_HEADER_BYTES + crcs.length * (4 + B))
  t.same(Array.from(crcs, (_c, i) => blockCrcAt(buf, i)), Array.from(crcs), 'the CRC table')

  let caught = 0
  for (let bit = 0; bit < buf.length * 8; bit++) {
    const bad = Buffer.from(buf)
    bad[bit >> 3] ^= 1 << (bit & 7)
    if (!verifyHeader(bad)) caught++
    else t.fail(`flipping bit ${bit} went unnoticed`)
  }
  t.equal(caught, buf.length * 8, 'every single-bit flip of header and CRC table is caught')

  const payload = rng.bytes(300)
  const marker = encodeMarker(EntryKind.sync, 9, timeMs, payload)
  t.ok(verifyHeader(marker.subarray(0, ENTRY_HEADER_BYTES)), 'a marker header verifies')
  const mh = decodeHeader(marker)
  t.same(mh, { kind: EntryKind.sync, seq: 9, timeMs, block: 0, count: 0, payloadBytes: payload.length, payloadCrc: crc32c(payload) })
  t.ok(marker.subarray(ENTRY_HEADER_BYTES).equals(payload), 'the marker payload follows the header')
  const flipped = Buffer.from(marker)
  flipped[ENTRY_HEADER_BYTES + 10] ^= 4
  t.not(crc32c(flipped.subarray(ENTRY_HEADER_BYTES)), mh!.payloadCrc, 'a flipped payload bit changes its CRC')

  t.equal(decodeHeader(Buffer.alloc(ENTRY_HEADER_BYTES)), undefined, 'zeros are not a header')
  t.equal(decodeHeader(buf.subarray(0, ENTRY_HEADER_BYTES - 1)), undefined, 'too short is not a header')
})
