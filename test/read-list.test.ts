// Store.readListAt (what an incremental send reads its changed blocks with): versions near each
// other in the log read together whatever their block numbers. It returns exactly what readAt
// returns block by block, at every cut, across writes of one and many blocks, trims, zeros,
// never-written blocks, rewrites since the cut (the index) and compaction (moved versions),
// in any order of the blocks asked; a block whose bytes fail their CRC is refused as readAt
// refuses it (CORRUPT), never returned; an incremental send made with it carries the same
// records as the blocks read one by one.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { sendStreamTo } from '../src/copy/send'
import { readStream } from '../src/copy/stream-format'
import { segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { tmpDir } from './helpers/cli'

const B = 4096
const SEED = Number(process.env.SEED ?? 777)

async function newStore (root: string, name: string, sizeBytes: number, segmentBytes?: number): Promise<Store> {
  const dir = path.join(root, name)
  await Store.create(dir, { sizeBytes, blockBytes: B, ...(segmentBytes ? { segmentBytes } : {}) })
  return (await openStore(dir, { checkpointIntervalMs: 0 })).store
}

/** What readAt gives for each of `blocks`, one block at a time. */
async function oneByOne (s: Store, seq: number, blocks: number[]): Promise<Buffer> {
  const parts: Buffer[] = []
  for (const b of blocks) parts.push(await s.readBlockAt(seq, b))
  return Buffer.concat(parts)
}

t.test(`readListAt equals readAt block by block across writes, trims, rewrites and compaction (SEED=${SEED})`, async t => {
  const root = tmpDir('read-list')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const blocks = 2048
  const s = await newStore(root, 'store', blocks * B, 2 << 20) // 2 MiB segments: reads span several
  const rng = new Rng(SEED)
  try {
    const cuts: string[] = []
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 80; i++) {
        const first = rng.int(blocks - 40)
        const n = rng.int(4) === 0 ? 1 + rng.int(32) : 1 // mostly scattered single blocks, as an increment
        const kind = rng.int(12)
        if (kind === 0) await s.discard(first * B, n * B)
        else await s.write(first * B, kind === 1 ? Buffer.alloc(n * B) : crypto.randomBytes(n * B))
      }
      await s.flush()
      await s.snapshot({ name: `r${round}` })
      cuts.push(`r${round}`)
      if (round === 2) {
        await s.deleteSnapshot('r1')
        cuts.splice(cuts.indexOf('r1'), 1)
        await s.compact()
      }
    }
    for (const name of cuts) {
      const seq = s.snapshotNamed(name).seq
      for (let k = 0; k < 6; k++) {
        const n = 1 + rng.int(k === 0 ? blocks : 300)
        const pick = new Set<number>()
        while (pick.size < n) pick.add(rng.int(blocks))
        const asked = [...pick]
        if (k % 2 === 0) asked.sort((x, y) => x - y)
        const got = await s.readListAt(seq, Float64Array.from(asked))
        t.ok(got.equals(await oneByOne(s, seq, asked)), `${name}: ${n} blocks (${k % 2 === 0 ? 'in order' : 'any order'}) as readAt reads them`)
      }
    }
    t.equal((await s.readListAt(s.snapshotNamed(cuts[0]).seq, new Float64Array(0))).length, 0, 'no blocks: nothing')
    await t.rejects(s.readListAt(s.snapshotNamed(cuts[0]).seq, Float64Array.of(blocks)), { code: 'BAD_ARGUMENT' }, 'a block past the volume is refused')
  } finally {
    await s.close()
  }
})

t.test('a gathered block that fails its CRC is refused, as readAt refuses it; an incremental send reads the same records', async t => {
  const root = tmpDir('read-list-bad')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const s = await newStore(root, 'store', 16 << 20)
  const dir = s.dir
  const scattered = [3, 900, 17, 2500, 41, 1200, 3999, 8, 640, 77]
  try {
    for (let b = 0; b < 4096; b += 64) await s.write(b * B, crypto.randomBytes(B))
    await s.snapshot({ name: 'a' })
    for (const b of scattered) await s.write(b * B, crypto.randomBytes(B))
    await s.write(100 * B, crypto.randomBytes(8 * B))
    await s.flush()
    await s.snapshot({ name: 'b' })
    // The send now, against the records read block by block.
    await sendStreamTo(s, 'b', 'a', { out: path.join(root, 'ab.stream') })
    const seq = s.snapshotNamed('b').seq
    for await (const r of readStream(path.join(root, 'ab.stream'))) {
      if ('header' in r || 'trailer' in r || r.type !== 'data') continue
      const want = await oneByOne(s, seq, Array.from({ length: r.count }, (_, i) => r.block + i))
      t.ok(r.data.equals(want), `record of blocks ${r.block}+${r.count}: the bytes readAt gives`)
    }
  } finally {
    await s.close()
  }
  // One of the scattered versions damaged on disk: found by its position in the newest segment.
  const { store: ro } = await openStore(dir, {}, [], 'read')
  const seq = ro.snapshotNamed('b').seq
  const [{ where }] = await ro.versionsOf([seq], Float64Array.of(900))
  const segBytes = ro.config.segmentBytes
  await ro.close()
  const file = path.join(dir, 'segments', segmentFileName(Math.floor(where[0] / segBytes)))
  t.ok(fs.existsSync(file), 'the segment file of block 900')
  const fd = fs.openSync(file, 'r+')
  fs.writeSync(fd, Buffer.from([0xff ^ fs.readFileSync(file)[where[0] % segBytes + 10]]), 0, 1, where[0] % segBytes + 10)
  fs.closeSync(fd)
  const { store: again } = await openStore(dir, {}, [], 'read')
  try {
    await t.rejects(again.readBlockAt(seq, 900), { code: 'CORRUPT' }, 'readAt refuses the damaged block')
    await t.rejects(again.readListAt(seq, Float64Array.from(scattered)), { code: 'CORRUPT' }, 'so does readListAt, with it among scattered blocks')
    const others = scattered.filter(b => b !== 900)
    t.ok((await again.readListAt(seq, Float64Array.from(others))).equals(await oneByOne(again, seq, others)), 'the others read as before')
  } finally {
    await again.close()
  }
})
