// logdisk diff: the block ranges written between two snapshots, through the CLI.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { logdisk, tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 16 << 20
const SEED = Number(process.env.SEED ?? 7717)

async function withStore (t: Test, fn: (s: Store, dir: string) => Promise<void>): Promise<string> {
  const root = tmpDir('diff')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const dir = path.join(root, 'store')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 2 << 20 })
  const s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  try {
    await fn(s, dir)
  } finally {
    await s.close()
  }
  return dir
}

interface Diff { from: { name: string }, to: { name: string }, blockBytes: number, blocks: number, bytes: number, ranges: Array<{ start: number, end: number, count: number, offset: number, bytes: number }> }

async function diff (dir: string, a: string, b: string): Promise<Diff> {
  const r = await logdisk('diff', dir, a, b, '--json')
  if (r.code !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout)
}

t.test('diff lists exactly the ranges written between A and B, adjacent blocks merged', async t => {
  const dir = await withStore(t, async s => {
    await s.write(0, Buffer.alloc(B, 1))
    await s.write(10 * B, Buffer.alloc(B, 1)) // before A only
    await s.snapshot({ name: 'A' })
    await s.write(3 * B + 10, Buffer.alloc(2 * B + 90, 2)) // blocks 3-5, unaligned
    await s.write(6 * B, Buffer.alloc(B, 2)) // adjacent: 3-6
    await s.write(0, Buffer.alloc(B, 3)) // rewritten since A
    await s.syncPoint('between')
    await s.write(100 * B, Buffer.alloc(B)) // zeros count as written
    await s.snapshot({ name: 'mid' })
    await s.write(200 * B, Buffer.alloc(801 * B, 4)) // several entries, one range
    await s.write(SIZE - B, Buffer.alloc(B, 5)) // the last block
    await s.write(4 * B, Buffer.alloc(B, 6)) // again inside 3-6
    await s.snapshot({ name: 'B' })
    await s.write(50 * B, Buffer.alloc(B, 7)) // after B
  })
  const d = await diff(dir, 'A', 'B')
  const last = SIZE / B - 1
  t.same(d.ranges.map(r => [r.start, r.end]), [[0, 0], [3, 6], [100, 100], [200, 1000], [last, last]])
  t.same(d.ranges.map(r => r.count), [1, 4, 1, 801, 1], 'counts')
  t.same(d.ranges.map(r => [r.offset, r.bytes]), d.ranges.map(r => [r.start * B, r.count * B]), 'byte offsets and lengths')
  t.equal(d.blocks, 808)
  t.equal(d.bytes, 808 * B)
  t.same([d.from.name, d.to.name, d.blockBytes], ['A', 'B', B])
  t.same((await diff(dir, 'B', 'A')).ranges, d.ranges, 'the order of A and B does not matter')
  t.same((await diff(dir, 'A', 'mid')).ranges.map(r => [r.start, r.end]), [[0, 0], [3, 6], [100, 100]])
  t.same((await diff(dir, 'B', 'B')).ranges, [], 'a snapshot against itself: nothing')

  const text = await logdisk('diff', dir, 'A', 'mid')
  t.equal(text.code, 0)
  t.same(text.stdout.trim().split('\n'), [
    'START\tEND\tBLOCKS\tOFFSET\tBYTES',
    '0\t0\t1\t0\t4.0 KiB',
    `3\t6\t4\t${3 * B}\t16.0 KiB`,
    `100\t100\t1\t${100 * B}\t4.0 KiB`,
    '3 ranges, 6 blocks (24.0 KiB) written between A and mid'
  ], 'the text table')
  const exact = await logdisk('diff', dir, 'A', 'mid', '--bytes', '-H')
  t.same(exact.stdout.trim().split('\n'), ['0\t0\t1\t0\t4096', `3\t6\t4\t${3 * B}\t${4 * B}`, `100\t100\t1\t${100 * B}\t${B}`], '--bytes -H: exact, rows only')
  const missing = await logdisk('diff', dir, 'A', 'nope')
  t.not(missing.code, 0)
  t.match(missing.stderr, /^logdisk: no snapshot named "nope"[^\n]*\n$/, 'an unknown snapshot: one line')
})

t.test('diff agrees with a model of random writes between three snapshots', async t => {
  const rng = new Rng(SEED)
  t.comment(`seed ${SEED}`)
  const written: Array<Set<number>> = [new Set(), new Set(), new Set()]
  const dir = await withStore(t, async s => {
    for (let phase = 0; phase < 3; phase++) {
      const writes = rng.range(10, 60)
      for (let i = 0; i < writes; i++) {
        const len = rng.range(1, 40 * B)
        const off = rng.int(SIZE - len)
        await s.write(off, Buffer.alloc(len, rng.int(256)))
        for (let b = Math.floor(off / B); b < Math.ceil((off + len) / B); b++) written[phase].add(b)
      }
      await s.snapshot({ name: `p${phase}` })
    }
  })
  const expand = (d: Diff): number[] => d.ranges.flatMap(r => Array.from({ length: r.count }, (_, i) => r.start + i))
  const sorted = (set: Set<number>): number[] => [...set].sort((x, y) => x - y)
  t.same(expand(await diff(dir, 'p0', 'p1')), sorted(written[1]), 'p0..p1')
  t.same(expand(await diff(dir, 'p0', 'p2')), sorted(new Set([...written[1], ...written[2]])), 'p0..p2')
  const d = await diff(dir, 'p1', 'p2')
  t.same(expand(d), sorted(written[2]), 'p1..p2')
  t.ok(d.ranges.every((r, i) => i === 0 || r.start > d.ranges[i - 1].end + 1), 'ranges are merged: never adjacent or overlapping')
})
