// The fast paths of whole-image copies and increments (issue 12 item 6) against what they
// replace: streams of formats 1 and 2 made by earlier code still apply; a full and an
// incremental stream made now carry the same identities and records as format 2's fixtures,
// and the same records as format 1's; c2 identities carried across changed blocks equal
// walked ones; changed blocks from the entry
// summaries equal a model's, also after compaction; restore equals export.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { contentIdentity } from '../src/copy/content-identity'
import { carryIdentity, setIdentitiesAt, walkIdentities } from '../src/copy/set-identity'
import { diffSnapshots } from '../src/copy/diff'
import { exportSnapshot } from '../src/copy/export'
import { receiveStream } from '../src/copy/receive'
import { restoreImage } from '../src/copy/restore'
import { sendStreamTo } from '../src/copy/send'
import { readStream } from '../src/copy/stream-format'
import { crc32c } from '../src/store'
import type { StoreParts } from '../src/store/parts'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { tmpDir } from './helpers/cli'
import { FIXTURES as ALL_FIXTURES } from './helpers/paths'

const B = 4096
const FIXTURES = path.join(ALL_FIXTURES, 'stream-1')
const FIXTURES_2 = path.join(ALL_FIXTURES, 'stream-2')
const SEED = Number(process.env.SEED ?? 4242)

async function newStore (root: string, name: string, sizeBytes: number, segmentBytes?: number): Promise<Store> {
  const dir = path.join(root, name)
  await Store.create(dir, { sizeBytes, blockBytes: B, ...(segmentBytes ? { segmentBytes } : {}) })
  return (await openStore(dir, { checkpointIntervalMs: 0 })).store
}

/** The writes that made the format-1 fixtures (see the fixtures' commit). */
async function fixtureWrites (s: Store): Promise<void> {
  for (const b of [0, 1, 2, 7, 100, 101, 500]) await s.write(b * B, Buffer.alloc(B, (b % 250) + 1))
  await s.flush()
  await s.snapshot({ name: 's1' })
  for (const b of [1, 300]) await s.write(b * B, Buffer.alloc(B, 0xab))
  await s.write(100 * B, Buffer.alloc(B))
  await s.flush()
  await s.snapshot({ name: 's2' })
}

async function records (file: string): Promise<unknown[]> {
  const out: unknown[] = []
  for await (const r of readStream(file)) {
    if ('header' in r) out.push({ snapshot: { ...r.header.snapshot, timeMs: 0 }, from: r.header.from, format: r.header.format })
    else if ('trailer' in r) out.push({ trailer: { ...r.trailer, streamCrc: 0 } }) // covers the header (uuid, times)
    else out.push(r)
  }
  return out
}

/** versionsAt's rows by block (`[where, crc]` per cut), whatever order they come in; each block once. */
async function versionRows (store: Store, seqs: number[], order: 'block' | 'any', chunk: number): Promise<Array<[number, number[]]>> {
  const rows = new Map<number, number[]>()
  for await (const { blocks, at } of store.versionsAt(seqs, chunk, order)) {
    for (let i = 0; i < blocks.length; i++) {
      if (rows.has(blocks[i])) throw new Error(`block ${blocks[i]} twice`)
      rows.set(blocks[i], at.flatMap(x => [x.where[i], x.crcs[i]]))
    }
  }
  return [...rows].sort((x, y) => x[0] - y[0])
}

/** The content identity as the index walk of earlier releases made it. */
async function identityByWalk (store: Store, seq: number): Promise<string> {
  const zeroCrc = crc32c(Buffer.alloc(store.blockBytes))
  const hash = crypto.createHash('sha256')
  const geometry = Buffer.alloc(16)
  geometry.writeBigUInt64LE(BigInt(store.sizeBytes), 0)
  geometry.writeBigUInt64LE(BigInt(store.blockBytes), 8)
  hash.update(geometry)
  for await (const [block, crc] of store.blockCrcsAt(seq)) {
    if (crc === zeroCrc) continue
    const row = Buffer.alloc(12)
    row.writeBigUInt64LE(BigInt(block), 0)
    row.writeUInt32LE(crc, 8)
    hash.update(row)
  }
  return `c1-${hash.digest('hex').slice(0, 40)}`
}

/** changedBlocks as earlier code made it: one pass over every version in the index. */
async function changedByHistory (store: Store, fromSeq: number, toSeq: number): Promise<number[]> {
  const out: number[] = []
  const db = (store as unknown as { p: StoreParts }).p.db
  for await (const [block, seq] of db.history()) {
    if (out[out.length - 1] !== block && seq > fromSeq && seq <= toSeq) out.push(block)
  }
  return out
}

t.test('format-1 and format-2 streams made by earlier code apply, and streams made now have the same identities and records', async t => {
  const root = tmpDir('copy-paths')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src', 4 << 20)
  const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex')
  try {
    for (const [format, dir] of [[1, FIXTURES], [2, FIXTURES_2]] as const) {
      const dst = await newStore(root, `dst${format}`, 4 << 20)
      try {
        await receiveStream(dst, path.join(dir, 's1.stream'))
        await receiveStream(dst, path.join(dir, 's2-from-s1.stream'))
        await restoreImage(dst, dst.snapshotNamed('s2').seq, path.join(root, `dst${format}-s2.img`))
        t.equal(sha(path.join(root, `dst${format}-s2.img`)), fs.readFileSync(path.join(dir, 's2.img.sha256'), 'utf8').trim(), `format ${format}: the received s2 is the image the fixture was made from`)
      } finally {
        await dst.close()
      }
    }

    await fixtureWrites(src)
    await sendStreamTo(src, 's1', undefined, { out: path.join(root, 's1.stream') })
    await sendStreamTo(src, 's2', 's1', { out: path.join(root, 's2-from-s1.stream') })
    for (const name of ['s1.stream', 's2-from-s1.stream']) {
      const now = await records(path.join(root, name))
      t.same(now, await records(path.join(FIXTURES_2, name)), `${name}: same identities and records as format 2 made by the release that introduced it`)
      const v1 = await records(path.join(FIXTURES, name))
      t.same(now.slice(1, -1), v1.slice(1, -1), `${name}: the same data and zero records as format 1 made by earlier code`)
    }
    const d = await diffSnapshots(src, 's1', 's2')
    t.same(d, JSON.parse(fs.readFileSync(path.join(FIXTURES, 'diff-s1-s2.json'), 'utf8')), 'diff as earlier code printed it')
  } finally {
    await src.close()
  }
})

t.test('a walk in the map\'s order while writes grow the map gives every block once, as in block order', async t => {
  const root = tmpDir('copy-paths-grow')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const s = await newStore(root, 'store', 16384 * B)
  try {
    for (let b = 0; b < 3000; b += 100) await s.write(b * B, crypto.randomBytes(100 * B))
    await s.write(5 * B, crypto.randomBytes(B)) // a block rewritten after the first cut
    await s.flush()
    await s.snapshot({ name: 'a' })
    await s.write(7 * B, crypto.randomBytes(B))
    await s.flush()
    await s.snapshot({ name: 'b' })
    const cuts = [s.snapshotNamed('a').seq, s.snapshotNamed('b').seq]
    const expected = await versionRows(s, cuts, 'block', 100)
    const rows = new Map<number, number[]>()
    const twice: number[] = []
    const map = (s as unknown as { p: StoreParts }).p.map
    const layout = map.layout
    let chunks = 0
    for await (const { blocks, at } of s.versionsAt(cuts, 100, 'any')) {
      for (let i = 0; i < blocks.length; i++) {
        if (rows.has(blocks[i])) twice.push(blocks[i])
        rows.set(blocks[i], at.flatMap(x => [x.where[i], x.crcs[i]]))
      }
      // After the second chunk, 3000 new blocks: the table grows and moves its rows.
      if (++chunks === 2) {
        for (let b = 4000; b < 7000; b += 100) await s.write(b * B, crypto.randomBytes(100 * B))
        await s.flush()
      }
    }
    t.not(map.layout, layout, 'the table moved its rows during the walk')
    t.same(twice, [], 'no block given twice')
    t.same([...rows].sort((x, y) => x[0] - y[0]), expected, 'the rows at both cuts, as in block order')
  } finally {
    await s.close()
  }
})

t.test(`changed blocks, identities and images match a model across writes, trims, rewrites and compaction (SEED=${SEED})`, async t => {
  const root = tmpDir('copy-paths')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const blocks = 2048
  const s = await newStore(root, 'store', blocks * B, 2 << 20)
  const rng = new Rng(SEED)
  const snaps: Array<{ name: string, touched: Set<number> }> = []
  let touched = new Set<number>()
  try {
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 60; i++) {
        const first = rng.int(blocks - 40)
        const n = 1 + rng.int(32)
        const kind = rng.int(10)
        if (kind === 0) await s.discard(first * B, n * B)
        else await s.write(first * B, kind === 1 ? Buffer.alloc(n * B) : crypto.randomBytes(n * B))
        for (let b = first; b < first + n; b++) touched.add(b)
      }
      await s.flush()
      const name = `r${round}`
      await s.snapshot({ name })
      snaps.push({ name, touched })
      touched = new Set()
      if (round === 3) {
        await s.deleteSnapshot('r1')
        await s.compact()
      }
    }
    const held = snaps.filter(x => x.name !== 'r1')
    for (let i = 0; i < held.length; i++) {
      const a = s.snapshotNamed(held[i].name)
      t.equal(await contentIdentity(s, a.seq), await identityByWalk(s, a.seq), `identity of ${a.name} as the index walk makes it`)
      const [walked] = await walkIdentities(s, [a.seq])
      t.equal((await setIdentitiesAt(s, [a.seq]))[0], walked, `c2 identity of ${a.name}: walked when nothing is known`)
      // The walk takes the map's rows in its own order: the same rows as in block order, at
      // this cut and the newest together (blocks rewritten since this one ask the index).
      const newest = s.snapshotNamed(held[held.length - 1].name).seq
      t.same(await versionRows(s, [a.seq, newest], 'any', 100), await versionRows(s, [a.seq, newest], 'block', 100), `rows at ${a.name} and the newest cut: any order = block order`)
      if (i > 0) {
        // Two cuts without a known identity: one is walked, the other carried from it.
        const before = s.snapshotNamed(held[i - 1].name)
        t.same(await setIdentitiesAt(s, [a.seq, before.seq]), [walked, (await walkIdentities(s, [before.seq]))[0]], `c2 identities of ${before.name} and ${a.name} at once equal their walks`)
      }
      for (let j = i + 1; j < held.length; j++) {
        const b = s.snapshotNamed(held[j].name)
        const expect = new Set<number>()
        const from = snaps.indexOf(held[i])
        const to = snaps.indexOf(held[j])
        for (let k = from + 1; k <= to; k++) for (const blk of snaps[k].touched) expect.add(blk)
        const got: number[] = []
        for await (const blk of s.changedBlocks(a.seq, b.seq)) got.push(blk)
        t.same(got, await changedByHistory(s, a.seq, b.seq), `changed blocks ${a.name}..${b.name} as the scan of every version finds them`)
        const [walkedB] = await walkIdentities(s, [b.seq])
        t.equal(await carryIdentity(s, walked, a.seq, b.seq), walkedB, `c2 identity carried ${a.name} -> ${b.name} equals the walk`)
        t.equal(await carryIdentity(s, walkedB, b.seq, a.seq), walked, `c2 identity carried ${b.name} -> ${a.name} equals the walk`)
        t.ok(got.every(blk => expect.has(blk)), `and each was written or discarded in between (${got.length} of ${expect.size}; a discard of blocks never written logs nothing)`)
      }
    }
    const last = held[held.length - 1].name
    await exportSnapshot(s, last, path.join(root, 'export.img'))
    await restoreImage(s, s.snapshotNamed(last).seq, path.join(root, 'restore.img'))
    const image = Buffer.concat(await Promise.all(Array.from({ length: blocks / 256 }, (_, i) => s.readSnapshot(last, i * 256 * B, 256 * B))))
    t.ok(fs.readFileSync(path.join(root, 'export.img')).equals(image), 'export is the snapshot image')
    t.ok(fs.readFileSync(path.join(root, 'restore.img')).equals(image), 'restore is the snapshot image')
  } finally {
    await s.close()
  }
})
