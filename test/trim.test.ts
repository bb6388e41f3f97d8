import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { Store } from '../src/store/store'
import { logdisk } from './helpers/cli'

/**
 * Discard (TRIM, F11): FALLOCATE PUNCH_HOLE and ZERO_RANGE on current.img become trim entries.
 * The range reads as zeros from then on; snapshots and restore points before it keep their
 * data; compaction frees what only the trimmed versions held; it all survives a reopen and an
 * index rebuild.
 */
const B = 4096
const MiB = 1024 * 1024

async function newStore (t: Test, sizeBytes = 64 * MiB): Promise<{ dir: string, open: () => Promise<Store> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-trim-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await Store.create(dir, { sizeBytes, blockBytes: B, segmentBytes: 4 * MiB })
  return { dir, open: () => Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 }) }
}

function diskBytes (dir: string): number {
  let n = 0
  for (const f of fs.readdirSync(path.join(dir, 'segments'))) n += fs.statSync(path.join(dir, 'segments', f)).blocks * 512
  return n
}

t.test('a discarded range reads as zeros; snapshots and sync points before it keep their data', async t => {
  const { open } = await newStore(t)
  const s = await open()
  const data = crypto.randomBytes(8 * MiB)
  await s.write(0, data)
  await s.snapshot({ name: 'before' })
  const p = await s.syncPoint('before-trim')
  await s.discard(MiB, 4 * MiB)
  const want = Buffer.from(data)
  want.fill(0, MiB, 5 * MiB)
  t.ok((await s.read(0, 8 * MiB)).equals(want), 'the range reads as zeros, the rest is untouched')
  t.ok((await s.readSnapshot('before', 0, 8 * MiB)).equals(data), 'a snapshot taken before reads the old data')
  const img = Buffer.alloc(8 * MiB)
  for await (const { block, data: d } of s.imageAt(p.seq)) d.copy(img, block * B)
  t.ok(img.equals(data), 'restore --at a sync point before the trim gives the old data')
  t.equal(s.status().writtenBytes, 4 * MiB, 'status counts trimmed blocks as not written')
  // Unaligned: whole blocks are trimmed, partial edges written as zeros.
  await s.discard(6 * MiB + 100, 3 * B)
  want.fill(0, 6 * MiB + 100, 6 * MiB + 100 + 3 * B)
  t.ok((await s.read(0, 8 * MiB)).equals(want), 'an unaligned discard zeros exactly its bytes')
  await t.rejects(s.discard(63 * MiB, 2 * MiB), { code: 'OUT_OF_RANGE' }, 'a discard past the end is refused')
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
  // `log` names the trims (it listed them as kind "8", "undefined": found by a hostile test).
  const dir = s.dir
  const json = JSON.parse((await logdisk('log', dir, '--json')).stdout) as Array<{ kind: string, block?: number, count?: number }>
  t.same(json.filter(r => r.kind === 'trim').map(r => [r.block, r.count]), [[MiB / B, 4 * MiB / B], [6 * MiB / B + 1, 2]], 'log --json: the trims, their blocks')
  t.match((await logdisk('log', dir)).stdout, new RegExp(`\\ttrim\\tblocks ${MiB / B}-${5 * MiB / B - 1} trimmed\\n`), 'log: a trim line')
})

t.test('trims survive a reopen, an index rebuild, and writes after them win', async t => {
  const { dir, open } = await newStore(t)
  let s = await open()
  const data = crypto.randomBytes(4 * MiB)
  await s.write(0, data)
  await s.discard(0, 2 * MiB)
  const after = crypto.randomBytes(B)
  await s.write(B, after) // a write after the trim wins over it
  const want = Buffer.alloc(4 * MiB)
  data.copy(want, 2 * MiB, 2 * MiB)
  after.copy(want, B)
  t.ok((await s.read(0, 4 * MiB)).equals(want), 'before the reopen')
  await s.close()
  s = await open()
  t.ok((await s.read(0, 4 * MiB)).equals(want), 'after a reopen')
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await open()
  t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.ok((await s.read(0, 4 * MiB)).equals(want), 'after an index rebuild')
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
})

t.test('a discard of never-written blocks writes nothing (mkfs discards a whole fresh disk)', async t => {
  const { open } = await newStore(t)
  const s = await open()
  const before = s.status().index.seq
  await s.discard(0, 64 * MiB)
  t.equal(s.status().index.seq, before, 'no entry for blocks that were zeros already')
  t.equal(s.status().writtenBytes, 0)
  await s.write(10 * MiB, Buffer.alloc(B, 7))
  await s.discard(0, 64 * MiB)
  t.equal(s.status().index.seq, before + 2, 'one trim entry for the one block that held data')
  t.ok((await s.read(10 * MiB, B)).equals(Buffer.alloc(B)))
  await s.close()
})

t.test('compaction frees what only the trimmed versions held', async t => {
  const { dir, open } = await newStore(t)
  const s = await open()
  for (let off = 0; off < 32 * MiB; off += MiB) await s.write(off, crypto.randomBytes(MiB))
  await s.flush()
  const full = diskBytes(dir)
  await s.snapshot({ name: 'keep' })
  await s.discard(0, 32 * MiB)
  let r = await s.compact({ cleanBelow: 0.5 })
  t.ok(diskBytes(dir) > full * 0.9, `a snapshot still pins the data: ${(diskBytes(dir) / MiB).toFixed(1)} MiB on disk (${r.versionsFreed} versions freed)`)
  t.ok((await s.readSnapshot('keep', 0, MiB)).length === MiB, 'the snapshot reads')
  await s.deleteSnapshot('keep')
  r = await s.compact({ cleanBelow: 0.5 })
  const left = diskBytes(dir)
  t.ok(left < full * 0.1, `after the snapshot goes, compaction frees it: ${(full / MiB).toFixed(1)} -> ${(left / MiB).toFixed(1)} MiB (${r.versionsFreed} versions freed, ${r.segmentsRecycled} segments recycled)`)
  t.ok((await s.read(0, 32 * MiB)).equals(Buffer.alloc(32 * MiB)), 'the volume reads as zeros')
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
  const again = await open()
  t.ok((await again.read(0, 32 * MiB)).equals(Buffer.alloc(32 * MiB)), 'and after a reopen')
  await again.close()
})
