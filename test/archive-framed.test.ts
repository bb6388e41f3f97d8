// The framed archive format LDARCH2 (src/archive/framed.ts): frames compressed one by one with
// a table, so a range of a segment is read without the rest. Round trips (whole and every kind
// of range, against slices of the original), both codecs, the old LDARCH1 still decoded by the
// same decodeArchive, damage caught (a damaged frame fails a range that covers it and the
// whole decode, not a range elsewhere; a damaged table fails everything), and a directory
// target's getRange (short reads at the end, NOT_FOUND).
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { ArchiveCodec, decodeArchive, encodeArchive } from '../src/archive/codec'
import { FRAMED_MAGIC, decodeFramedRange, encodeFramed, readFramedHeader } from '../src/archive/framed'
import { RangedReader } from '../src/archive/ranged-read'
import { DirTarget } from '../src/archive/dir'

t.setTimeout(120_000)

/** Segment-like data: random, zero and text blocks, reproducible. */
function segmentLike (bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes)
  const rnd = crypto.createCipheriv('aes-256-ctr', crypto.createHash('sha256').update(`framed ${seed}`).digest(), Buffer.alloc(16)).update(Buffer.alloc(bytes))
  for (let at = 0, i = 0; at < bytes; at += 4096, i++) {
    if (i % 3 === 0) rnd.copy(out, at, at, Math.min(bytes, at + 4096))
    else if (i % 3 === 1) out.write(`block ${i} of a segment, text that compresses `.repeat(80).slice(0, Math.min(4096, bytes - at)), at)
  }
  return out
}

const FRAME = 64 * 1024

t.test('round trips: whole and ranges, both codecs; LDARCH1 still decoded', async t => {
  const data = segmentLike(FRAME * 5 + 12345, 1)
  for (const codec of [ArchiveCodec.brotli, ArchiveCodec.gzip]) {
    const enc = await encodeFramed(data, codec, FRAME)
    t.equal(enc.toString('latin1', 0, 8), FRAMED_MAGIC)
    t.ok(enc.length < data.length, `compressed (${enc.length} of ${data.length} bytes)`)
    t.ok((await decodeArchive(enc)).equals(data), `codec ${codec}: decodeArchive reads LDARCH2 whole`)
    const h = readFramedHeader(enc)
    t.equal(h.frames.length, 6)
    const readAt = async (at: number, n: number): Promise<Buffer> => enc.subarray(at, at + n)
    for (const [offset, length] of [[0, 4096], [FRAME - 100, 200], [FRAME * 2, FRAME * 2], [FRAME * 5 + 12000, 4096], [3, data.length], [data.length, 10]]) {
      const got = await decodeFramedRange(h, readAt, offset, length)
      t.ok(got.equals(data.subarray(offset, offset + length)), `codec ${codec}: range ${offset}+${length}`)
    }
  }
  const old = await encodeArchive(data)
  t.equal(old.toString('latin1', 0, 8), 'LDARCH1\n')
  t.ok((await decodeArchive(old)).equals(data), 'LDARCH1 objects are read as before')
  const empty = await encodeFramed(Buffer.alloc(0))
  t.equal((await decodeArchive(empty)).length, 0, 'an empty object')
})

t.test('damage: a frame fails the ranges that cover it and the whole decode; the table fails everything', async t => {
  const data = segmentLike(FRAME * 4, 2)
  const enc = await encodeFramed(data, ArchiveCodec.brotli, FRAME)
  const h = readFramedHeader(enc)
  const bad = Buffer.from(enc)
  const f2 = h.frames[2]
  bad[h.headerBytes + f2.offset + Math.floor(f2.length / 2)] ^= 0x40
  const readAt = async (at: number, n: number): Promise<Buffer> => bad.subarray(at, at + n)
  await t.rejects(decodeFramedRange(readFramedHeader(bad), readAt, FRAME * 2 + 10, 100), { code: 'CORRUPT' }, 'a range in the damaged frame')
  t.ok((await decodeFramedRange(readFramedHeader(bad), readAt, 0, FRAME)).equals(data.subarray(0, FRAME)), 'a range elsewhere is good')
  await t.rejects(decodeArchive(bad), { code: 'CORRUPT' }, 'the whole decode')
  const badTable = Buffer.from(enc)
  badTable[60] ^= 1
  t.throws(() => readFramedHeader(badTable), { code: 'CORRUPT' }, 'a damaged table')
  await t.rejects(decodeArchive(badTable), { code: 'CORRUPT' })
  await t.rejects(decodeArchive(enc.subarray(0, enc.length - 5)), { code: 'CORRUPT' }, 'truncated')
})

t.test('a directory target reads ranges; RangedReader reads LDARCH2 by range and answers undefined for LDARCH1', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-framed-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const target = new DirTarget(dir)
  const data = segmentLike(FRAME * 3, 3)
  await target.put('framed.ldarch', await encodeFramed(data, ArchiveCodec.brotli, FRAME))
  await target.put('old.ldarch', await encodeArchive(data))
  const raw = await target.get('framed.ldarch')
  t.ok((await target.getRange('framed.ldarch', 10, 100)).equals(raw.subarray(10, 110)))
  t.equal((await target.getRange('framed.ldarch', raw.length - 5, 100)).length, 5, 'a short read at the end')
  t.equal((await target.getRange('framed.ldarch', raw.length + 5, 100)).length, 0, 'none past the end')
  await t.rejects(target.getRange('nope', 0, 1), { code: 'NOT_FOUND' })
  let fetched = 0
  const counting = Object.assign(Object.create(target), {
    getRange: async (name: string, at: number, n: number) => { const b = await target.getRange(name, at, n); fetched += b.length; return b }
  })
  const r = new RangedReader(() => counting)
  t.ok((await r.read('framed.ldarch', FRAME + 5, 4096))!.equals(data.subarray(FRAME + 5, FRAME + 5 + 4096)))
  t.ok(fetched < raw.length / 2, `one frame and the header fetched (${fetched} of ${raw.length} bytes)`)
  const once = fetched
  t.ok((await r.read('framed.ldarch', FRAME + 9000, 100))!.equals(data.subarray(FRAME + 9000, FRAME + 9100)))
  t.equal(fetched, once, 'the same frame again: from the decoded frames kept, nothing fetched')
  t.ok((await r.read('framed.ldarch', FRAME - 10, 20))!.equals(data.subarray(FRAME - 10, FRAME + 10)), 'a range across two frames, one of them kept')
  t.equal(await r.read('old.ldarch', 0, 4096), undefined, 'LDARCH1: undefined (the caller fetches it whole)')
})
