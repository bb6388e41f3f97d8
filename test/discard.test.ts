// Discard: Store.discard (placeholder until trim entries: zero blocks) and the FALLOCATE modes
// of ImageFolder, on a real store without FUSE. The kernel path is in the conformance suite.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { Errno } from '../src/fuse/errno'
import { ImageFolder } from '../src/fuse/image-ops'
import { silentLogger } from '../src/store/logger'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'

const B = 4096
const MiB = 1024 * 1024
const SIZE = 16 * MiB
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

async function fresh (t: Test): Promise<Store> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-discard-'))
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 4 * MiB })
  const store = await Store.open(dir, { checkpointIntervalMs: 0 })
  t.teardown(async () => {
    await store.close().catch(() => undefined)
    fs.rmSync(dir, { recursive: true, force: true })
  })
  return store
}

function random (seed: number, n: number): Buffer {
  const rng = new Rng(seed)
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = rng.int(256)
  return b
}

t.test('discard: the range reads as zeros, partial blocks keep their other bytes, snapshots keep the old data', async t => {
  const store = await fresh(t)
  const data = random(1, 3 * MiB)
  await store.write(0, data)
  await store.snapshot({ name: 'before' })
  // Unaligned at both ends and longer than one 1 MiB chunk of the placeholder.
  const from = 4096 + 100
  const to = 2 * MiB + 5000
  await store.discard(from, to - from)
  const expected = Buffer.from(data)
  expected.fill(0, from, to)
  t.equal(sha(await store.read(0, data.length)), sha(expected), 'zeros exactly in the range')
  t.equal(sha(await store.readSnapshot('before', 0, data.length)), sha(data), 'the snapshot still reads every old byte')
  await store.flush()
  const report = await store.verify()
  t.ok(report.ok, `verify: ${report.problems.join('; ')}`)
})

t.test('discard of blocks that already read as zeros appends nothing', async t => {
  const store = await fresh(t)
  await store.write(MiB, Buffer.alloc(8192, 1))
  const seq = store.status().index.seq
  await store.discard(4 * MiB, 8 * MiB) // never written
  t.equal(store.status().index.seq, seq, 'a never-written range: no entry')
  await store.discard(MiB, 8192)
  const after = store.status().index.seq
  t.ok(after > seq, 'written blocks are zeroed')
  await store.discard(MiB, 8192)
  t.equal(store.status().index.seq, after, 'discarding them again appends nothing')
  t.ok((await store.read(MiB, 8192)).equals(Buffer.alloc(8192)))
})

t.test('discard checks its range like write does', async t => {
  const store = await fresh(t)
  await t.rejects(store.discard(SIZE - 4096, 8192), { code: 'OUT_OF_RANGE' }, 'past the end: OUT_OF_RANGE')
  await t.rejects(store.discard(-1, 10), { code: 'BAD_ARGUMENT' })
  await store.discard(100, 0) // nothing to do
})

t.test('ImageFolder.fallocate: which modes discard, which are refused, and with which errno', async t => {
  const store = await fresh(t)
  await store.write(0, Buffer.alloc(SIZE, 0x77))
  await store.snapshot({ name: 's' })
  const folder = new ImageFolder(store, silentLogger)
  const cur = folder.open('current.img', 2)
  const snap = folder.open('s.img', 0)
  const errnoOf = async (p: Promise<unknown>): Promise<number> => p.then(() => 0, err => (err as { errno?: number }).errno ?? -999)
  const cases: Array<[number, number, string]> = [
    [0x03, 0, 'PUNCH_HOLE|KEEP_SIZE (a loop device\'s discard)'],
    [0x11, 0, 'ZERO_RANGE|KEEP_SIZE (a loop device\'s write-zeroes)'],
    [0x10, 0, 'ZERO_RANGE'],
    [0x81, 0, 'WRITE_ZEROES|KEEP_SIZE'],
    [0x00, Errno.EOPNOTSUPP, 'plain allocation'],
    [0x01, Errno.EOPNOTSUPP, 'KEEP_SIZE allocation'],
    [0x08, Errno.EOPNOTSUPP, 'COLLAPSE_RANGE'],
    [0x20, Errno.EOPNOTSUPP, 'INSERT_RANGE'],
    [0x40, Errno.EOPNOTSUPP, 'UNSHARE_RANGE']
  ]
  let at = 0
  for (const [mode, errno, what] of cases) {
    t.equal(await errnoOf(folder.fallocate(cur, mode, at, 8192)), errno, `${what}: ${errno === 0 ? 'done' : 'errno ' + -errno}`)
    const back = await store.read(at, 8192)
    t.ok(back.equals(Buffer.alloc(8192, errno === 0 ? 0 : 0x77)), errno === 0 ? '  reads as zeros' : '  unchanged')
    at += MiB
  }
  t.equal(await errnoOf(folder.fallocate(snap, 0x03, 0, 4096)), Errno.EROFS, 'on a snapshot image: EROFS')
  t.equal(await errnoOf(folder.fallocate(cur, 0x10, SIZE - 4096, 8192)), Errno.EFBIG, 'ZERO_RANGE that would grow the image: EFBIG')
  t.equal(await errnoOf(folder.fallocate(cur, 0x11, SIZE - 4096, 8192)), 0, 'with KEEP_SIZE it is clipped to the image')
  t.ok((await store.read(SIZE - 4096, 4096)).equals(Buffer.alloc(4096)))
  t.equal(await errnoOf(folder.fallocate(cur, 0x03, SIZE + 4096, 4096)), 0, 'wholly past the end with KEEP_SIZE: nothing to do')
  t.ok((await store.readSnapshot('s', 0, SIZE)).equals(Buffer.alloc(SIZE, 0x77)), 'the snapshot keeps every byte')
})
