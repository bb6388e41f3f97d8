// Trims move with compaction (store format 5, EntryKind.trimMove). A trim that stays its
// block's newest version is needed for good; before trims moved, its entry kept its segment for
// good, and scattered discards with rewrites elsewhere filled a pool with a capacity (ENOSPC,
// and `compact` gave nothing back). Freeing such a trim instead is wrong: the data it hides may
// still be in a write entry other blocks need, and an index rebuild from the log would bring it
// back. So every check here runs again after the index is rebuilt from the log alone.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { EntryKind } from '../src/store/format'
import { Store } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { dieAfterTrimMove } from './helpers/die-after-trim-move'
import { rebuiltFromLog } from './helpers/rebuilt-from-log'

const B = 4096
const BLOCKS = 256 // a 1 MiB image
const SEGMENT = 258 * B // about as big as the image: live data fits in a segment or two

async function newStore (t: Test): Promise<{ dir: string, open: () => Promise<Store> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-trim-move-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await Store.create(dir, { sizeBytes: BLOCKS * B, blockBytes: B, segmentBytes: SEGMENT })
  return { dir, open: () => Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 }) }
}

const segmentFiles = (dir: string): number => fs.readdirSync(path.join(dir, 'segments')).filter(f => f.endsWith('.log')).length

/** Scattered single-block discards and rewrites, compacting each round; the model is what every block reads. */
async function churn (s: Store, rng: Rng, model: Buffer, rounds: number, onRound?: (round: number) => Promise<void>): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < 24; i++) {
      const b = rng.int(BLOCKS)
      const data = crypto.randomBytes(B)
      await s.write(b * B, data)
      data.copy(model, b * B)
    }
    for (let i = 0; i < 8; i++) {
      const b = rng.int(BLOCKS)
      await s.discard(b * B, B)
      model.fill(0, b * B, (b + 1) * B)
    }
    await s.compact({ cleanBelow: 0.5 })
    await onRound?.(round)
  }
}

t.test('scattered discards with rewrites: compaction moves live trims, their segments go, and a rebuild from the log reads the same', async t => {
  const { dir, open } = await newStore(t)
  const rng = new Rng(0x7a1)
  const model = Buffer.alloc(BLOCKS * B)
  let s = await open()
  await s.write(0, Buffer.alloc(BLOCKS * B, 1)) // every block written once
  model.fill(1)
  let most = 0
  await churn(s, rng, model, 120, async round => { if (round >= 20) most = Math.max(most, segmentFiles(dir)) })
  // 120 rounds append about 12 segments of log; live data is at most one image (1 MiB).
  t.ok(most <= 6, `segment files stay bounded: at most ${most} after the first 20 rounds (they grew with every round while trims kept their segments)`)
  const status = s.status()
  t.ok(status.segments.inactive <= 2, `few inactive segments are left: ${JSON.stringify(status.segments)}`)
  let trimMoves = 0
  for await (const e of s.entries()) if (e.kind === EntryKind.trimMove) trimMoves++
  t.ok(trimMoves > 0, `the log holds trim move entries (${trimMoves})`)
  s = await rebuiltFromLog(t, s, dir, open, model)
  // The rebuilt index names the same holders: compaction goes on moving and freeing.
  await churn(s, rng, model, 20)
  t.ok(segmentFiles(dir) <= 6, `rebuilt, then more churn: ${segmentFiles(dir)} segment files`)
  t.ok((await s.read(0, BLOCKS * B)).equals(model), 'rebuilt and churned: the image reads as the model')
  await s.close()
})

t.test('a snapshot taken before discards keeps its data through trim moves, reopen and rebuild', async t => {
  const { dir, open } = await newStore(t)
  const rng = new Rng(0x7a2)
  const model = Buffer.alloc(BLOCKS * B)
  let s = await open()
  const first = crypto.randomBytes(BLOCKS * B)
  await s.write(0, first)
  first.copy(model)
  await churn(s, rng, model, 10)
  await s.snapshot({ name: 'mid' })
  const mid = Buffer.from(model)
  await churn(s, rng, model, 60)
  // Trims that are not their block's newest version but that the snapshot reads (zeros) move too.
  t.ok((await s.readSnapshot('mid', 0, BLOCKS * B)).equals(mid), 'the snapshot reads as it did')
  t.ok((await s.read(0, BLOCKS * B)).equals(model), 'the image reads as the model')
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await open()
  t.ok((await s.readSnapshot('mid', 0, BLOCKS * B)).equals(mid), 'rebuilt: the snapshot reads as it did')
  t.ok((await s.read(0, BLOCKS * B)).equals(model), 'rebuilt: the image reads as the model')
  await s.deleteSnapshot('mid')
  await churn(s, rng, model, 10)
  t.ok(segmentFiles(dir) <= 6, `the snapshot deleted: ${segmentFiles(dir)} segment files`)
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
})

t.test('a crash between a trim move and its compaction\'s end loses nothing: the next pass frees both copies\' segments as it should', async t => {
  const { dir, open } = await newStore(t)
  const rng = new Rng(0x7a3)
  const model = Buffer.alloc(BLOCKS * B)
  let s = await open()
  await s.write(0, Buffer.alloc(BLOCKS * B, 2))
  model.fill(2)
  await churn(s, rng, model, 30)
  // Moves done, then the pass dies before it frees anything (the trim move is in the log, the
  // trims' old entries too): both list the same versions; the later one holds them.
  const moved = dieAfterTrimMove(s)
  for (let round = 0; round < 5 && moved() === 0; round++) {
    for (let i = 0; i < 8; i++) {
      const b = rng.int(BLOCKS)
      await s.discard(b * B, B)
      model.fill(0, b * B, (b + 1) * B)
    }
    for (let i = 0; i < 64; i++) {
      const b = rng.int(BLOCKS)
      const data = crypto.randomBytes(B)
      await s.write(b * B, data)
      data.copy(model, b * B)
    }
    await s.compact({ cleanBelow: 0.5 }).catch(() => {})
  }
  t.ok(moved() > 0, 'a pass moved trims and died')
  await s.close().catch(() => {})
  for (const rebuild of [false, true]) {
    if (rebuild) fs.rmSync(path.join(dir, 'index'), { recursive: true })
    s = await open()
    t.ok((await s.read(0, BLOCKS * B)).equals(model), `${rebuild ? 'rebuilt' : 'reopened'}: the image reads as the model`)
    await churn(s, rng, model, 15)
    t.ok((await s.read(0, BLOCKS * B)).equals(model), `${rebuild ? 'rebuilt' : 'reopened'}, churned: the image reads as the model`)
    t.ok(segmentFiles(dir) <= 6, `${rebuild ? 'rebuilt' : 'reopened'}, churned: ${segmentFiles(dir)} segment files`)
    t.ok((await s.verify()).ok, `${rebuild ? 'rebuilt' : 'reopened'}: verify`)
    await s.close()
  }
})

t.test('a shrink after discarding the tail and compacting is allowed; the trims stay, so a rebuild and a grow read zeros there', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-trim-shrink-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const MiB = 1024 * 1024
  await Store.create(dir, { sizeBytes: 64 * MiB, blockBytes: B, segmentBytes: 4 * MiB })
  const open = (): Promise<Store> => Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
  let s = await open()
  const low = crypto.randomBytes(4 * MiB)
  await s.write(0, low)
  // One write entry holds data on both sides of the new end: its bytes stay in the log after
  // the tail's versions die, so only the trims keep a rebuild from bringing them back.
  await s.write(32 * MiB - 2 * B, crypto.randomBytes(4 * B))
  await s.write(40 * MiB, crypto.randomBytes(4 * MiB))
  const edge = await s.read(32 * MiB - 2 * B, 2 * B)
  await s.discard(32 * MiB, 32 * MiB)
  const early = await s.resize(32 * MiB).catch((err: Error) => err)
  t.ok(early instanceof Error && /block 8192 .*past the new end was written/.test(early.message), `before a compaction the history still holds the data: refused (${(early as Error).message})`)
  await s.compact({ cleanBelow: 0.5 })
  t.same(await s.resize(32 * MiB), { fromBytes: 64 * MiB, toBytes: 32 * MiB }, 'discarded and compacted: the shrink is allowed')
  t.ok((await s.read(0, 4 * MiB)).equals(low), 'the data below the end reads as written')
  t.ok((await s.read(32 * MiB - 2 * B, 2 * B)).equals(edge), 'the blocks just below the end too')
  await s.compact({ cleanBelow: 0.5 })
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
  for (const rebuild of [false, true]) {
    if (rebuild) fs.rmSync(path.join(dir, 'index'), { recursive: true })
    s = await open()
    t.equal(s.sizeBytes, 32 * MiB, `${rebuild ? 'rebuilt' : 'reopened'}: the new size`)
    t.ok((await s.read(32 * MiB - 2 * B, 2 * B)).equals(edge), `${rebuild ? 'rebuilt' : 'reopened'}: the blocks below the end read as written`)
    await s.resize(64 * MiB)
    t.ok((await s.read(32 * MiB, 32 * MiB)).equals(Buffer.alloc(32 * MiB)), `${rebuild ? 'rebuilt' : 'reopened'} and grown: the old tail reads as zeros`)
    t.ok((await s.verify()).ok, `${rebuild ? 'rebuilt' : 'reopened'} and grown: verify`)
    // A rebuild indexes again what the log still holds of the tail's old data (entries of the
    // segment that was current): a compaction finds those versions dead, and the shrink goes.
    await s.compact({ cleanBelow: 0.5 })
    await s.resize(32 * MiB)
    await s.close()
  }
})
