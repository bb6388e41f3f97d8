import t from 'tap'
import { sealCrcTrailer } from '../src/store/crc'
import { decodeBaselineIndex, encodeBaselineIndex } from '../src/store/baseline'

/** baseline.idx (docs/FORMAT.md): what a release reads back, and what it refuses, with CORRUPT. */
const UUID = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0'
const idx = { cutSeq: 1234, blocks: [{ block: 7, seq: 100, crc: 0xdeadbeef }, { block: 9, seq: 101, crc: 1 }] }

t.test('reads back what it wrote', async t => {
  t.same(decodeBaselineIndex(UUID, encodeBaselineIndex(UUID, idx), 'baseline.idx'), idx)
})

t.test('refuses a version it does not know, a bad checksum and another store\'s index', async t => {
  const other = encodeBaselineIndex(UUID, idx)
  other.writeUInt32LE(2, 8)
  sealCrcTrailer(other)
  t.throws(() => decodeBaselineIndex(UUID, other, 'baseline.idx'), { code: 'CORRUPT', message: /baseline index baseline\.idx: unknown version 2/ })
  const flipped = encodeBaselineIndex(UUID, idx)
  flipped[45] ^= 1
  t.throws(() => decodeBaselineIndex(UUID, flipped, 'baseline.idx'), { code: 'CORRUPT', message: /checksum mismatch/ })
  t.throws(() => decodeBaselineIndex('00000000-0000-0000-0000-000000000000', encodeBaselineIndex(UUID, idx), 'baseline.idx'), { code: 'CORRUPT', message: /another store/ })
})
