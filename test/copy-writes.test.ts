// How copies write and check: writes of at most WRITE_BYTES, early fdatasyncs whose failure is
// not lost, and stream records whose CRCs are composed (from block CRCs) instead of computed,
// byte for byte the stream the direct computation gives, with damage still caught.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { WRITE_BYTES, writeFully } from '../src/copy/partial-file'
import { RecordType, StreamWriter, readStream, type StreamHeader } from '../src/copy/stream-format'
import { Writeback } from '../src/copy/writeback'
import { crc32c } from '../src/store/crc'
import { crc32cOfBlocks } from '../src/store/crc-combine'
import { Rng } from '../src/testing/rng'

const SEED = Number(process.env.COPY_WRITES_SEED ?? 0x3e7)
t.comment(`seed ${SEED} (rerun with COPY_WRITES_SEED=${SEED})`)
const rng = new Rng(SEED)
const B = 4096

function tmp (t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-copy-writes-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A FileHandle stand-in that records writes and fails datasync when told to. */
function fakeHandle (opts: { failSync?: boolean } = {}): { fh: fs.promises.FileHandle, writes: Array<[number, number | null]>, syncs: number[], bytes: Buffer } {
  const writes: Array<[number, number | null]> = []
  const syncs: number[] = []
  const state = { bytes: Buffer.alloc(0), written: 0 }
  const fh = {
    write: async (data: Buffer, offset: number, length: number, position: number | null) => {
      writes.push([length, position])
      const at = position ?? state.written
      const end = at + length
      if (state.bytes.length < end) state.bytes = Buffer.concat([state.bytes, Buffer.alloc(end - state.bytes.length)])
      data.copy(state.bytes, at, offset, offset + length)
      state.written += length
      return { bytesWritten: length, buffer: data }
    },
    datasync: async () => {
      syncs.push(state.written)
      if (opts.failSync === true) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' })
    }
  }
  return { fh: fh as unknown as fs.promises.FileHandle, writes, syncs, get bytes () { return state.bytes } }
}

t.test('writeFully writes at most WRITE_BYTES at a time, every byte in place', async t => {
  const h = fakeHandle()
  const data = rng.bytes(3 * WRITE_BYTES + 1234)
  await writeFully(h.fh, data, 100)
  t.ok(h.writes.every(([length]) => length <= WRITE_BYTES), `writes of ${h.writes.map(w => w[0]).join(', ')}`)
  t.equal(h.writes.length, 4, 'four writes')
  t.same(h.writes.map(w => w[1]), [100, 100 + WRITE_BYTES, 100 + 2 * WRITE_BYTES, 100 + 3 * WRITE_BYTES], 'at consecutive offsets')
  t.ok(h.bytes.subarray(100).equals(data), 'the bytes')
  const appended = fakeHandle()
  await writeFully(appended.fh, data, null)
  t.ok(appended.writes.every(([, position]) => position === null), 'appends stay appends')
  t.ok(appended.bytes.equals(data), 'appended bytes')
})

t.test('Writeback starts an fdatasync every so many bytes, one at a time, and keeps a failure for settle', async t => {
  const h = fakeHandle()
  const wb = new Writeback(h.fh, 'x', 1000)
  for (let i = 0; i < 10; i++) wb.wrote(300)
  await wb.settle()
  t.ok(h.syncs.length >= 1 && h.syncs.length <= 3, `synced ${h.syncs.length} times for 3000 bytes every 1000`)
  const counted = fakeHandle()
  const wb2 = new Writeback(counted.fh, 'y', 1000)
  await writeFully(counted.fh, rng.bytes(2500), 0, wb2)
  await wb2.settle()
  t.equal(counted.syncs.length, 1, 'writeFully counts its bytes: one sync for 2500 bytes every 1000')
  const failing = fakeHandle({ failSync: true })
  const wb3 = new Writeback(failing.fh, '/some/file.partial', 10)
  wb3.wrote(100)
  await t.rejects(wb3.settle(), { code: 'IO', message: /fdatasync \/some\/file\.partial/ }, 'the early sync\'s failure comes out of settle')
  wb3.wrote(100)
  await t.rejects(wb3.settle(), { code: 'IO' }, 'and stays')
})

/** A stream encoded the plain way: every CRC computed from the bytes (the format as documented). */
function plainStream (header: StreamHeader, runs: Array<[number, Buffer]>): Buffer {
  const out: Buffer[] = []
  const pre = Buffer.alloc(16)
  Buffer.from('LDSTREAM').copy(pre)
  pre.writeUInt32LE(2, 8)
  out.push(pre)
  const rec = (type: number, payload: Buffer): void => {
    const head = Buffer.alloc(8)
    head.writeUInt8(type, 0)
    head.writeUInt32LE(payload.length, 4)
    const tail = Buffer.alloc(4)
    tail.writeUInt32LE(crc32c(payload, crc32c(head)), 0)
    out.push(head, payload, tail)
  }
  rec(RecordType.header, Buffer.from(JSON.stringify(header)))
  for (const [block, data] of runs) {
    const runHead = Buffer.alloc(12)
    runHead.writeBigUInt64LE(BigInt(block), 0)
    runHead.writeUInt32LE(data.length / B, 8)
    rec(RecordType.data, Buffer.concat([runHead, data]))
  }
  const streamCrc = crc32c(Buffer.concat(out))
  rec(RecordType.trailer, Buffer.from(JSON.stringify({ records: 1 + runs.length, dataBlocks: runs.reduce((n, [, d]) => n + d.length / B, 0), zeroBlocks: 0, streamCrc })))
  return Buffer.concat(out)
}

t.test('a stream whose record CRCs are composed is the plainly computed stream, and reads back with each block\'s CRC', async t => {
  const dir = tmp(t)
  const header: StreamHeader = {
    format: 2, sourceUuid: '00000000-0000-4000-8000-000000000000', blockBytes: B, sizeBytes: 4096 * B,
    snapshot: { name: 's', identity: 'c2-00', timeMs: 1, frozen: false }, from: null, createdAt: '2026-12-02T00:00:00.000Z'
  }
  const runs: Array<[number, Buffer]> = [[0, rng.bytes(B)], [3, rng.bytes(256 * B)], [300, rng.bytes(17 * B)], [1000, rng.bytes(256 * B)]]
  const blockCrcs = (data: Buffer): Uint32Array => Uint32Array.from({ length: data.length / B }, (_, i) => crc32c(data.subarray(i * B, (i + 1) * B)))
  const write = async (file: string, compose: boolean): Promise<void> => {
    const chunks: Buffer[] = []
    const w = new StreamWriter({ write: async chunk => { chunks.push(Buffer.from(chunk)) } })
    await w.header(header)
    for (const [block, data] of runs) await w.data(block, data, B, compose ? crc32cOfBlocks(blockCrcs(data), B) : undefined)
    await w.trailer()
    fs.writeFileSync(file, Buffer.concat(chunks))
  }
  const composed = path.join(dir, 'composed.stream')
  const computed = path.join(dir, 'computed.stream')
  await write(composed, true)
  await write(computed, false)
  const plain = plainStream(header, runs)
  t.ok(fs.readFileSync(composed).equals(plain), 'composed CRCs: the plain stream, byte for byte')
  t.ok(fs.readFileSync(computed).equals(plain), 'computed CRCs: the same')

  for (const blockCrcsWanted of [false, true]) {
    const got: Array<[number, Buffer, Uint32Array | undefined]> = []
    for await (const r of readStream(composed, { blockCrcs: blockCrcsWanted })) {
      if ('type' in r && r.type === 'data') got.push([r.block, Buffer.from(r.data), r.crcs])
    }
    t.same(got.map(g => g[0]), runs.map(r => r[0]), `blockCrcs ${blockCrcsWanted}: every record`)
    t.ok(got.every((g, i) => g[1].equals(runs[i][1])), 'their bytes')
    if (blockCrcsWanted) t.ok(got.every((g, i) => g[2] !== undefined && Buffer.from(g[2].buffer).equals(Buffer.from(blockCrcs(runs[i][1]).buffer))), 'each block\'s CRC')
    else t.ok(got.every(g => g[2] === undefined), 'no block CRCs unless asked')
  }

  // Damage: a data byte of the third record, and a byte of the trailer's stream CRC's input.
  const bytes = fs.readFileSync(composed)
  const at = bytes.indexOf(runs[2][1].subarray(5 * B, 5 * B + 64)) + 10
  const damaged = Buffer.from(bytes)
  damaged[at] ^= 0x20
  const bad = path.join(dir, 'bad.stream')
  fs.writeFileSync(bad, damaged)
  for (const blockCrcsWanted of [false, true]) {
    const seen: number[] = []
    await t.rejects((async () => {
      for await (const r of readStream(bad, { blockCrcs: blockCrcsWanted })) if ('type' in r) seen.push(r.block)
    })(), { code: 'CORRUPT', message: /record 4 .* fails its checksum/ }, `blockCrcs ${blockCrcsWanted}: the damaged record fails`)
    t.same(seen, [0, 3], 'nothing of it or after it is yielded')
  }
})

t.test('readStream with heldBytes reuses its buffers, and a record stays intact while no more than heldBytes are held', async t => {
  const dir = tmp(t)
  const header: StreamHeader = {
    format: 2, sourceUuid: '00000000-0000-4000-8000-000000000000', blockBytes: B, sizeBytes: 65536 * B,
    snapshot: { name: 's', identity: 'c2-00', timeMs: 1, frozen: false }, from: null, createdAt: '2026-12-02T00:00:00.000Z'
  }
  // 48 records, of 1 to 256 blocks: about 24 MiB, so the reader's 4 MiB buffers come round several times.
  const runs: Array<[number, Buffer]> = []
  let block = 0
  for (let i = 0; i < 48; i++) {
    const n = i % 3 === 0 ? 256 : 1 + Math.floor(rng.next() * 256)
    runs.push([block, rng.bytes(n * B)])
    block += n + 1
  }
  const file = path.join(dir, 'many.stream')
  const chunks: Buffer[] = []
  const w = new StreamWriter({ write: async chunk => { chunks.push(Buffer.from(chunk)) } })
  await w.header(header)
  for (const [b, data] of runs) await w.data(b, data, B)
  await w.trailer()
  fs.writeFileSync(file, Buffer.concat(chunks))

  const heldBytes = 6 * 1024 * 1024
  const held: Array<{ i: number, data: Buffer }> = []
  let heldNow = 0
  let checked = 0
  let i = 0
  for await (const r of readStream(file, { heldBytes, blockCrcs: true })) {
    if (!('type' in r) || r.type !== 'data') continue
    // Keep records while they fit in heldBytes; each dropped one must still be what was written.
    held.push({ i, data: r.data })
    heldNow += r.data.length
    while (heldNow > heldBytes - 2 * 1024 * 1024) {
      const old = held.shift()!
      heldNow -= old.data.length
      if (!old.data.equals(runs[old.i][1])) t.fail(`record ${old.i} changed while held`)
      checked++
    }
    i++
  }
  for (const h of held) if (h.data.equals(runs[h.i][1])) checked++
  t.equal(i, runs.length, 'every record')
  t.equal(checked, runs.length, 'every record intact while held')
})
