import t, { type Test } from 'tap'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimArchive } from '../src/testing/sim-archive'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimIndexStorage } from '../src/testing/sim-index'
import { SimScheduler } from '../src/testing/sim-scheduler'
import { scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * A baseline merge whose last index commit fails leaves its rows (block -> baseline slot)
 * staged in the index batch, and the in-memory map already on the baseline. Nothing appended
 * since, the next merge's fence needs no checkpoint, so it used to judge from a LevelDB
 * without those rows: the versions looked still in the log, their slots (listed in
 * baseline.idx) looked overwritten by the very same versions, no reader of the slots was
 * found, baseline.idx stopped listing them, and the staged rows then committed. A failure
 * before the merge listed them again (simulation seed 127: fdatasync of baseline.img) left
 * the index on slots baseline.idx does not vouch for: verify fails, a later merge rewrites
 * the slot without repointing the old version's row, and a restore reads the newer bytes.
 */
const B = 4096
const SEG = 258 * B
const SIZE = 512 * B

const tmp = (t: Test): string => scratchDir(t, 'logdisk-baseline-staged')

const blk = (tag: string): Buffer => tagBlock(tag, B)

t.test('a merge after one whose index commit failed sees its rows', async t => {
  const sched = new SimScheduler(new Rng(1))
  const sim = new SimFileLayer(sched)
  const indexes = new SimIndexStorage(sched)
  const dir = tmp(t)
  const drive = async <T>(p: Promise<T>): Promise<T> => { await sched.run(p); return p }
  await drive(Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim))
  const opts: OpenOptions = { fileLayer: sim, openIndex: indexes.open, archive: new SimArchive(sched), clock: sched.clock, checkpointIntervalMs: 0, historyKeepMs: 0 }
  let s = await drive(Store.open(dir, opts))
  for (let b = 0; b < 8; b++) await drive(s.write(b * B, blk(`A${b}`)))
  const p = await drive(s.syncPoint('P'))
  await drive(s.checkpoint())

  // Merge 1: everything written so far goes into the baseline; its last index commit fails.
  sched.setFaults([{ match: /^index\.commit/, code: 'EIO', chance: 1 }])
  await t.rejects(drive(s.compactIntoBaseline()), 'merge 1 fails at its index commit')
  // Merge 2, nothing appended in between: it fails at the baseline image's fdatasync.
  sched.setFaults([{ match: /^fdatasync .*baseline\.img/, code: 'EIO', chance: 1 }])
  await drive(s.compactIntoBaseline().catch(() => undefined))
  sched.setFaults([])
  const report = await drive(s.verify())
  t.ok(report.ok, `verify: index and baseline agree: ${report.problems.slice(0, 2).join('; ')}`)
  // No later merge of this open can trust baseline.img's fdatasync (writeback-guard.ts): the
  // store says so, and is opened again, as its error asks.
  t.ok(s.writebackFailed, 'the store says an fdatasync failed')
  await drive(s.close())
  s = await drive(Store.open(dir, opts))

  // Newer versions, merged into the same slots: the point P still reads the old ones.
  for (let b = 0; b < 8; b++) await drive(s.write(b * B, blk(`B${b}`)))
  await drive(s.compactIntoBaseline())
  const at = Buffer.alloc(SIZE)
  await drive((async () => {
    for await (const { block, data } of s.imageAt((await s.resolvePoint('P')).seq)) data.copy(at, block * B)
  })())
  t.equal(p.seq, (await drive(s.resolvePoint('P'))).seq)
  for (let b = 0; b < 8; b++) t.equal(at.subarray(b * B, b * B + 2).toString(), `A${b}`, `restore --at P: block ${b}`)
  for (let b = 0; b < 8; b++) t.equal((await drive(s.read(b * B, 2))).toString(), `B${b}`, `current: block ${b}`)
  t.ok((await drive(s.verify())).ok, 'verify at the end')
  await drive(s.close())
})
