// native/block-crc.c: the CRC32C of each block, four blocks side by side, must give exactly
// what one @node-rs/crc32 call per block gives (every block's CRC is in the log and the
// index: a different number would make verify and reads call good data corrupt).
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import path from 'node:path'
import t from 'tap'
import { blockCrcs, blockCrcsPortable, crc32c, fastBlockCrcs } from '../src/store/crc'
import { addonPath, loadAddon } from '../src/store/native-addon'

const onX86Linux = process.platform === 'linux' && process.arch === 'x64'

t.test('make build builds the block-CRC addon and it is used here', { skip: !onX86Linux && 'x86-64 Linux only' }, async t => {
  t.ok(loadAddon('block-crc') !== undefined, `${addonPath('block-crc')} loads`)
  t.equal(fastBlockCrcs, true, 'blockCrcs runs in the addon (this CPU has SSE4.2)')
})

t.test('the same CRCs as one crc32c per block, for every count and block size', async t => {
  for (const B of [8, 512, 4096, 65536]) {
    for (const count of [0, 1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257]) {
      if (B * count > 32 * 1024 * 1024) continue
      const data = crypto.randomBytes(B * count + 11) // a tail past the last block is not read
      const want = Array.from({ length: count }, (_, i) => crc32c(data.subarray(i * B, (i + 1) * B)))
      t.same([...blockCrcs(data, count, B)], want, `${count} blocks of ${B} bytes`)
      t.same([...blockCrcsPortable(data, count, B)], want)
    }
  }
  // Known answer: CRC32C of 32 zero bytes is 0x8A9136AA (RFC 3720, B.4).
  t.equal(blockCrcs(Buffer.alloc(64), 2, 32)[1], 0x8a9136aa, 'RFC 3720 test vector')
  // A block that is a view into a bigger buffer, at an odd offset.
  const big = crypto.randomBytes(4096 * 9 + 3)
  const view = big.subarray(3)
  t.same([...blockCrcs(view, 9, 4096)], [...blockCrcsPortable(view, 9, 4096)], 'a view at an odd offset')
})

t.test('bad arguments are refused, not read past', { skip: !fastBlockCrcs && 'no addon' }, async t => {
  const addon = loadAddon<{ blockCrcs: (d: Uint8Array, b: number, o: Uint32Array) => void }>('block-crc')!
  t.throws(() => addon.blockCrcs(Buffer.alloc(4096), 4096, new Uint32Array(2)), /data hold out.length blocks/, 'data shorter than the blocks asked')
  t.throws(() => addon.blockCrcs(Buffer.alloc(4096), 12, new Uint32Array(1)), /multiple of 8/, 'a block size not a multiple of 8')
  t.throws(() => addon.blockCrcs(Buffer.alloc(4096), 4096, [0] as unknown as Uint32Array), /blockCrcs\(data: Uint8Array/, 'out must be a Uint32Array')
  const out = new Uint32Array(1)
  addon.blockCrcs(Buffer.alloc(4096), 4096, out)
  t.equal(out[0], crc32c(Buffer.alloc(4096)), 'exactly one block of data is enough')
})

t.test('LOGDISK_PORTABLE_CRC=1 does without the addon', async t => {
  const mod = path.join(__dirname, '..', 'src', 'store', 'crc.js')
  const out = execFileSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(mod)}).fastBlockCrcs))`], { env: { ...process.env, LOGDISK_PORTABLE_CRC: '1' } }).toString()
  t.equal(out, 'false')
})
