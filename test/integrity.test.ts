import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { archiveLink } from '../src/archive/link'
import { parseTarget } from '../src/archive/parse-target'
import { decodeArchive } from '../src/archive/codec'
import { restoreImage } from '../src/copy/restore'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { SimIndexStorage } from '../src/testing/sim-index'
import { SimScheduler } from '../src/testing/sim-scheduler'
import { fillSegment, mirroredStore, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * Regression tests for the data-loss defects of issue 9, one per defect, each the scenario of
 * its reproduction script (../shared/repro/) made permanent. They run with history.keep=0
 * where the defect needs compaction to free history (the default window would hide it).
 */
const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const SIZE = 1024 * B

const tmp = (t: Test, name: string): string => scratchDir(t, `logdisk-integrity-${name}`)

const blk = (tag: string): Buffer => tagBlock(tag, B)

async function imageAt (store: Store, seq: number): Promise<Buffer> {
  const out = Buffer.alloc(store.sizeBytes)
  for await (const { block, data } of store.imageAt(seq)) data.copy(out, block * B)
  return out
}

/** The image at `seq` as `logdisk restore --at` writes it (restoreImage: a sparse file, every block CRC-checked). */
async function restoredAt (t: Test, store: Store, seq: number): Promise<Buffer> {
  const out = path.join(tmp(t, 'restore'), 'at.img')
  await restoreImage(store, seq, out)
  return fs.readFileSync(out)
}

t.test('defect 1: writes acknowledged while compaction runs are never freed', async t => {
  // Compaction used to analyse the index as of its start and then free what it thought dead
  // up to the log's end at the time: writes landing in between were punched. The scheduler
  // lets writes and checkpoints land at every await point of the pass.
  for (let seed = 1; seed <= 12; seed++) {
    const sched = new SimScheduler(new Rng(seed))
    const sim = new SimFileLayer(sched)
    const indexes = new SimIndexStorage(sched)
    const dir = tmp(t, 'race')
    const drive = async <T>(p: Promise<T>): Promise<T> => { await sched.run(p); return p }
    await drive(Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim))
    const open = (): Promise<Store> => Store.open(dir, { fileLayer: sim, openIndex: indexes.open, clock: sched.clock, checkpointIntervalMs: 0, checkpointMaxBlocks: 32, historyKeepMs: 0 })
    const store = await drive(open())
    const model = Buffer.alloc(SIZE)
    const rng = new Rng(seed * 7919)
    const put = async (block: number, n: number): Promise<void> => {
      const data = rng.bytes(n * B)
      data.copy(model, block * B) // writes apply in call order (the append lock is FIFO)
      await store.write(block * B, data)
    }
    // Four generations of the first 512 blocks: three of them dead, spread over segments.
    await drive((async () => { for (let g = 0; g < 4; g++) for (let b = 0; b < 512; b += 64) await put(b, 64) })())
    const writers = (async () => {
      for (let i = 0; i < 60; i++) {
        const n = rng.range(1, 16)
        await put(rng.int(SIZE / B - n), n)
        if (i % 10 === 0) await store.checkpoint()
      }
    })()
    const report = await drive(Promise.all([store.compact({ cleanBelow: rng.chance(0.5) ? 0 : 0.5 }), writers]).then(([r]) => r))
    await drive(store.flush())
    t.ok((await drive(store.read(0, SIZE))).equals(model), `seed ${seed}: every write reads back after compaction (${report.entriesFreed} entries freed)`)
    await drive(store.close())
    const again = await drive(open())
    t.ok((await drive(again.read(0, SIZE))).equals(model), `seed ${seed}: and after a reopen`)
    t.ok((await drive(again.verify())).ok, `seed ${seed}: verify`)
    await drive(again.close())
  }
})

// ../shared/repro/mirror-stale-first.js
t.test('defect 2: a mirror copy that fell behind is never read after a restart', async t => {
  const dir = tmp(t, 'mirror')
  const { sim, open } = await mirroredStore(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  let s = await open()
  for (let b = 0; b < 10; b++) await s.write(b * B, blk(`A${b}`))
  await s.flush()
  sim.failNext('writev', 'EIO') // one I/O error, on copy v1: v1 is dropped, v2 carries on
  await s.write(10 * B, blk('A10'))
  for (let b = 0; b < 10; b++) await s.write(b * B, blk(`B${b}`))
  await s.flush() // returns only once the index says v1 fell behind
  t.same(s.volumesOf(0), ['v2'], 'the index names only the copy that is current')
  await s.close()

  s = await open()
  t.equal((await s.read(3 * B, 2)).toString(), 'B3', 'a flushed write survives the restart')
  t.equal((await s.read(10 * B, 3)).toString(), 'A10', 'so does the write that dropped v1')
  await s.write(500 * B, blk('x'))
  await s.flush()
  const seg = 'seg-000000000000.log'
  t.equal(sim.readFile(path.join(dir, 'vol-v1', seg)), undefined, 'the open removed the stale copy, which the index does not name (store-open.ts)')
  t.match((await s.verify()).problems.join(';'), '', 'verify does not count the stale copy as present')

  const { made } = await s.repairCopies(2, async () => 'v1')
  t.ok(made >= 1, 'pool repair makes a fresh copy on v1')
  t.ok(sim.readFile(path.join(dir, 'vol-v1', seg))!.equals(sim.readFile(path.join(dir, 'vol-v2', seg))!), 'the stale copy is replaced')
  t.ok((await s.verify()).ok, 'verify is clean after the repair')
  await s.close()
  // The index rebuilt from the log alone: the copy that reaches furthest wins.
  sim.poke(path.join(dir, 'vol-v1', seg), 0, sim.readFile(path.join(dir, 'vol-v1', seg))!.subarray(0, 1))
  s = await open()
  t.equal((await s.read(3 * B, 2)).toString(), 'B3')
  await s.close()
})

// ../shared/repro/archived-flag-lost.js
t.test('defect 3: a segment stays archived after compaction makes it inactive', async t => {
  const dir = tmp(t, 'arflag')
  const target = tmp(t, 'arflag-target')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(target), cfg.uuid)
  const open = (): Promise<Store> => Store.open(dir, { checkpointIntervalMs: 0, archive, historyKeepMs: 0 })
  let s = await open()
  const eight = (tag: string): Buffer => Buffer.concat(Array.from({ length: 8 }, (_, i) => blk(tag + i)))
  await s.write(5 * B, eight('A'))
  const p = await s.syncPoint('P')
  const n = await fillSegment(s, 200, 'f')
  await s.write(5 * B, eight('B'))
  for (let i = 0; i < n; i++) await s.write((200 + (i % 200)) * B, blk(`g${i}`))
  await s.flush()
  const rep = await s.compact({ cleanBelow: 0 })
  t.ok(rep.bytesPunched > 0, 'compaction punched the old versions out of segment 0')
  const atP = async (): Promise<string> => (await imageAt(s, (await s.resolvePoint('P')).seq)).subarray(5 * B, 5 * B + 2).toString()
  const restoredP = async (): Promise<string> => (await restoredAt(t, s, (await s.resolvePoint('P')).seq)).subarray(5 * B, 5 * B + 2).toString()
  t.equal(await atP(), 'A0', 'restore --at P reads the archived history')
  t.equal(await restoredP(), 'A0', 'restoreImage at P writes it')
  await s.close()
  s = await open()
  t.equal(await atP(), 'A0', 'and still after a reopen')
  t.equal(await restoredP(), 'A0', 'restoreImage at P after a reopen')
  await s.archive({})
  const name = fs.readdirSync(target).find(n => n.includes('seg-000000000000'))!
  const seg0 = await decodeArchive(fs.readFileSync(path.join(target, name)))
  t.equal(seg0.subarray(12288, 12288 + 2).toString() === 'A0' || seg0.includes(blk('A0')), true, 'the archived object still holds the old version (never overwritten by the punched file)')
  t.equal(await atP(), 'A0', 'restore --at P after archive')
  t.equal(await restoredP(), 'A0', 'restoreImage at P after archive')
  t.equal(p.seq > 0, true)
  await s.close()
})

// ../shared/repro/horizon-rebuild.js
t.test('defect 4: an index rebuild keeps the history horizon', async t => {
  const dir = tmp(t, 'horizon')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const open = (): Promise<Store> => Store.open(dir, { checkpointIntervalMs: 0, historyKeepMs: 0 })
  let s = await open()
  await s.write(5 * B, blk('A'))
  await s.write(6 * B, blk('live6'))
  await s.syncPoint('P')
  for (let i = 0; i < 300; i++) await s.write((100 + i) * B, blk(`fill${i}`))
  await s.write(5 * B, blk('B'))
  await s.flush()
  const rep = await s.compact()
  t.ok(rep.versionsFreed > 0, 'compaction freed the old version of block 5')
  await t.rejects(s.resolvePoint('P'), { code: 'BAD_ARGUMENT', message: /oldest point that can be restored is sequence \d+/ }, 'restore --at P is refused, naming the oldest restorable point')
  const horizon = s.status().history.horizonSeq
  t.ok(horizon >= 3, `status shows the horizon (${horizon})`)
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  s = await open()
  t.ok(s.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.equal(s.status().history.horizonSeq, horizon, 'the rebuilt index has the same horizon (from the log)')
  // Its marker went with the history it gave up (marker-life.ts): the rebuilt index has no note P.
  await t.rejects(s.resolvePoint('P'), { code: /^(BAD_ARGUMENT|NOT_FOUND)$/, message: /"?P"? .*(older than the history|are forgotten)/ }, 'restore --at P is still refused, not served wrong')
  await s.close()
})

// ../shared/repro/baseline-archive-restore.js
t.test('defect 5: a second baseline merge keeps archived history readable', async t => {
  const dir = tmp(t, 'blarch')
  const target = tmp(t, 'blarch-target')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(target), cfg.uuid)
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive, historyKeepMs: 0 })
  await s.write(5 * B, blk('A'))
  for (let i = 0; i < 300; i++) await s.write((100 + i) * B, blk(`fill${i}`))
  const r1 = await s.compactIntoBaseline()
  t.ok(r1.blocks > 0, 'merge 1 moved blocks into the baseline')
  const p = await s.syncPoint('P')
  await s.write(5 * B, blk('B'))
  for (let i = 0; i < 300; i++) await s.write((400 + i) * B, blk(`fill2-${i}`))
  const r2 = await s.compactIntoBaseline()
  t.ok(r2.blocks > 0 && r2.cutSeq > p.seq, 'merge 2 overwrote block 5 in the baseline')
  const img = await imageAt(s, (await s.resolvePoint('P')).seq)
  t.equal(img.subarray(5 * B, 5 * B + 1).toString(), 'A', 'restore --at P reads block 5 as it was (from the archive)')
  t.equal((await restoredAt(t, s, (await s.resolvePoint('P')).seq)).subarray(5 * B, 5 * B + 1).toString(), 'A', 'restoreImage at P writes it (no CORRUPT)')
  t.equal((await s.read(5 * B, 1)).toString(), 'B', 'the current image reads B')
  t.ok((await s.verify()).ok, 'verify')
  await s.close()
})

t.test('defect 5: power lost during a baseline merge leaves no checksum failure', async t => {
  let crashes = 0
  for (let seed = 1; seed <= 16; seed++) {
    const sched = new SimScheduler(new Rng(seed))
    const sim = new SimFileLayer(sched)
    const indexes = new SimIndexStorage(sched)
    const dir = tmp(t, 'blcrash')
    const drive = async <T>(p: Promise<T>): Promise<T> => { await sched.run(p); return p }
    await drive(Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim))
    const opts: OpenOptions = { fileLayer: sim, openIndex: indexes.open, clock: sched.clock, checkpointIntervalMs: 0, historyKeepMs: 0 }
    let s = await drive(Store.open(dir, opts))
    const model = Buffer.alloc(SIZE)
    await drive((async () => {
      for (let g = 0; g < 3; g++) {
        if (g > 0) await s.compactIntoBaseline() // the last generation waits for the merge below
        for (let b = 0; b < 200; b += 20) {
          const data = Buffer.concat(Array.from({ length: 20 }, (_, i) => blk(`g${g}b${b + i}`)))
          data.copy(model, b * B)
          await s.write(b * B, data)
        }
      }
      await s.flush()
    })())
    const rng = new Rng(seed)
    const merge = s.compactIntoBaseline().catch(() => undefined)
    const run = await sched.run(merge, { crashAfterSteps: rng.int(600) })
    if (!run.powerLost) continue
    crashes++
    await drive(s.abandon())
    sim.crash(rng)
    indexes.crash(rng)
    sched.restorePower()
    s = await drive(Store.open(dir, opts))
    t.ok((await drive(s.read(0, SIZE))).equals(model), `seed ${seed}: the image survives a power loss mid-merge`)
    const report = await drive(s.verify())
    t.ok(report.ok, `seed ${seed}: verify after the crash: ${report.problems.slice(0, 3).join('; ')}`)
    await drive(s.compactIntoBaseline())
    t.ok((await drive(s.read(0, SIZE))).equals(model), `seed ${seed}: and after merging again`)
    await drive(s.close())
  }
  t.ok(crashes >= 8, `power failed in the middle of ${crashes} merges`)
})

t.test('defect 7: a segment only snapshots need is inactive, archived and recycled', async t => {
  const dir = tmp(t, 'lifecycle')
  const target = tmp(t, 'lifecycle-target')
  const cfg = await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const archive = archiveLink(parseTarget(target), cfg.uuid)
  const s = await Store.open(dir, { checkpointIntervalMs: 0, archive })
  const gen = (g: number): Buffer => Buffer.concat(Array.from({ length: 64 }, (_, i) => blk(`g${g}-${i}`)))
  for (let b = 0; b < 768; b += 64) await s.write(b * B, gen(b))
  await s.snapshot({ name: 'before' })
  for (let b = 0; b < 768; b += 64) await s.write(b * B, gen(b + 1000)) // overwrite everything
  await s.flush()
  const before = s.status().segments
  const r = await s.archive({})
  const after = s.status().segments
  t.ok(r.archived >= 2 && r.removedLocal >= 2, `the segments only the snapshot reads were archived and removed locally (${JSON.stringify(before)} -> ${JSON.stringify(after)})`)
  const local = (await s.spaceByState())
  t.ok(local.active + local.inactive + local.current <= 5 * SEG, 'local space is about the current volume, not its history')
  const snap = await s.readSnapshot('before', 0, 768 * B)
  t.ok(snap.subarray(0, 64 * B).equals(gen(0)), 'the snapshot still reads, from backing storage')
  t.ok((await s.read(0, 64 * B)).equals(gen(1000)), 'the current image reads the new data')
  await s.close()
})

t.test('defect 8: the history window keeps restore points; outside it a restore says why', async t => {
  const dir = tmp(t, 'window')
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  let now = Date.UTC(2026, 5, 1)
  const s = await Store.open(dir, { checkpointIntervalMs: 0, clock: () => now })
  t.equal(s.historyKeepMs, 24 * 3600 * 1000, 'history.keep is 24h by default')
  await s.write(5 * B, blk('A'))
  await s.write(6 * B, blk('live'))
  const p = await s.syncPoint('an-hour-ago')
  for (let i = 0; i < 300; i++) await s.write((100 + i) * B, blk(`fill${i}`))
  await s.write(5 * B, blk('B'))
  now += 3600_000
  const rep = await s.compact({ cleanBelow: 0 })
  t.equal(rep.versionsFreed, 0, 'compaction frees nothing a point inside the window reads')
  const img = await imageAt(s, (await s.resolvePoint('an-hour-ago')).seq)
  t.equal(img.subarray(5 * B, 5 * B + 1).toString(), 'A', 'the sync point of an hour ago restores')
  now += 24 * 3600_000
  const later = await s.compact({ cleanBelow: 0 })
  t.ok(later.versionsFreed > 0, 'a day later the old version is freed')
  await t.rejects(s.resolvePoint('an-hour-ago'), { code: 'BAD_ARGUMENT', message: /older than the history this store kept.*history\.keep=1d.*oldest point that can be restored is sequence \d+/ })
  t.ok(s.status().history.horizonSeq >= p.seq, 'status shows the horizon')
  s.setHistoryKeepMs(Infinity)
  t.equal(s.status().history.keepMs, Infinity)
  await s.close()
})
