// CRC32C composition (crc-combine.ts) and the run check built on it (block-check.ts: reads, scans): the same
// answers as computing every CRC from the bytes, and a damaged block in a long run still named.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { crc32c } from '../src/store/crc'
import { crc32cCombine, crc32cOfBlocks } from '../src/store/crc-combine'
import { segmentFileName } from '../src/store/format'
import { badBlocks, firstBadBlock, firstBadBlockOfRun } from '../src/store/block-check'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

const SEED = Number(process.env.CRC_SEED ?? 0xc3c)
t.comment(`seed ${SEED} (rerun with CRC_SEED=${SEED})`)
const rng = new Rng(SEED)

function blockCrcs (data: Buffer, B: number): Uint32Array {
  const crcs = new Uint32Array(data.length / B)
  for (let i = 0; i < crcs.length; i++) crcs[i] = crc32c(data.subarray(i * B, (i + 1) * B))
  return crcs
}

t.test('crc32cCombine gives the CRC of the concatenation, for any lengths', async t => {
  const lengths = [0, 1, 3, 8, 511, 4096, 65537, 1 << 20]
  for (const a of lengths) {
    for (const b of lengths) {
      const A = rng.bytes(a)
      const Bytes = rng.bytes(b)
      t.equal(crc32cCombine(crc32c(A), crc32c(Bytes), b), crc32c(Buffer.concat([A, Bytes])), `|A| ${a}, |B| ${b}`)
    }
  }
  t.equal(crc32cCombine(crc32c(Buffer.from('abc')), 0, 0), crc32c(Buffer.from('abc')), 'combining with nothing changes nothing')
})

t.test('crc32cOfBlocks gives the CRC of the blocks end to end', async t => {
  for (const B of [512, 4096, 65536]) {
    for (const n of [1, 2, 7, 256]) {
      if (n * B > 4 << 20) continue
      const data = rng.bytes(n * B)
      t.equal(crc32cOfBlocks(blockCrcs(data, B), B), crc32c(data), `${n} blocks of ${B} bytes`)
    }
  }
  t.equal(crc32cOfBlocks(new Uint32Array(0), 4096), 0, 'no blocks: the CRC of nothing')
})

for (const [name, check] of [['firstBadBlock (block by block in the addon)', firstBadBlock], ['firstBadBlockOfRun (one CRC over the run)', firstBadBlockOfRun]] as const) {
  t.test(`${name} names the first damaged block of a run, wherever it is`, async t => {
    const B = 4096
    const n = 256
    const data = rng.bytes(n * B)
    const crcs = blockCrcs(data, B)
    t.equal(check(data, crcs, B), -1, 'an intact run')
    for (const bad of [0, 1, 128, 255]) {
      const copy = Buffer.from(data)
      copy[bad * B + 77] ^= 0x01
      t.equal(check(copy, crcs, B), bad, `one flipped bit in block ${bad}`)
    }
    const two = Buffer.from(data)
    two[10 * B] ^= 0x80
    two[200 * B + 5] ^= 0x80
    t.equal(check(two, crcs, B), 10, 'two damaged blocks: the first')
    t.same(badBlocks(two, crcs, B), [10, 200], 'badBlocks: both (what a scan reports)')
    t.same(badBlocks(data, crcs, B), [], 'badBlocks of an intact run: none')
    const swapped = Buffer.from(data)
    data.copy(swapped, 3 * B, 4 * B, 5 * B)
    data.copy(swapped, 4 * B, 3 * B, 4 * B)
    t.equal(check(swapped, crcs, B), 3, 'two blocks swapped')
    const zeroed = Buffer.from(data)
    zeroed.fill(0, 50 * B, 51 * B)
    t.equal(check(zeroed, crcs, B), 50, 'a block read back as zeros (a hole punched by mistake)')
    t.equal(check(data.subarray(0, 3 * B + 100), crcs, B), -1, 'only whole blocks of the data are checked')
  })
}

t.test('a read of a whole 256-block entry with one damaged block fails and names it; its neighbours read', async t => {
  const B = 4096
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-crc-combine-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await Store.create(dir, { sizeBytes: 8 << 20, blockBytes: B, segmentBytes: (1 << 20) + 64 * 1024 })
  let store = await Store.open(dir, { checkpointIntervalMs: 0 })
  const data = rng.bytes(256 * B)
  await store.write(0, data)
  await store.snapshot({ name: 's' })
  await store.close()
  const file = path.join(dir, 'segments', segmentFileName(0))
  const bytes = fs.readFileSync(file)
  const at = bytes.indexOf(data.subarray(131 * B, 132 * B))
  t.ok(at > 0, 'found block 131 in the segment')
  const fd = fs.openSync(file, 'r+')
  fs.writeSync(fd, Buffer.from([bytes[at + 9] ^ 0x04]), 0, 1, at + 9)
  fs.closeSync(fd)
  store = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.teardown(() => store.close())
  const seq = store.snapshotNamed('s').seq
  await t.rejects(store.readBlocksAt(seq, 0, 256), { code: 'CORRUPT', message: /block 131 fails its checksum/ }, 'the whole run')
  await t.rejects(store.read(0, 256 * B), { code: 'CORRUPT', message: /block 131 / }, 'a read of the current image')
  t.ok((await store.read(0, 131 * B)).equals(data.subarray(0, 131 * B)), 'the blocks before it')
  t.ok((await store.read(132 * B, 124 * B)).equals(data.subarray(132 * B)), 'the blocks after it')
})
