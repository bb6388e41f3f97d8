// Compaction: space tracks live data, snapshots keep what they see, and a model says so.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import fc from 'fast-check'
import t from 'tap'
import { Store } from '../src/store'
import { archiveLink } from '../src/archive/link'
import { DirTarget } from '../src/archive/dir'
import { readConfig } from '../src/store/config'
import type { StoreParts } from '../src/store/parts'

const MiB = 1024 * 1024
t.setTimeout(900_000) // a loaded machine (2 shared cores) runs these several times slower
/** These tests are about what compaction frees: no history window (history.keep=0). */
const NO_WINDOW = { historyKeepMs: 0 }

function tmp (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-compact-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return path.join(dir, 'store')
}

/** Disk use of the store's segments (what du counts: allocated blocks). */
function segmentBytes (store: string): number {
  return Number(execFileSync('du', ['-s', '--block-size=1', path.join(store, 'segments')], { encoding: 'utf8' }).split('\t')[0])
}

function pattern (seed: number, bytes: number): Buffer {
  const words = new Uint32Array(bytes / 4)
  let x = seed * 2654435761 >>> 0
  for (let i = 0; i < words.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; words[i] = x }
  return Buffer.from(words.buffer)
}

t.test('overwriting the same 40 MiB ten times, then compacting, leaves under 1.2x the live data on disk', async t => {
  const LIVE = 40 * MiB
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 256 * MiB, segmentBytes: 4 * MiB })
  const store = await Store.open(dir, NO_WINDOW)
  for (let pass = 0; pass < 10; pass++) {
    for (let off = 0; off < LIVE; off += MiB) await store.write(off, pattern(pass * 1000 + off / MiB, MiB))
  }
  await store.flush()
  const before = segmentBytes(dir)
  const report = await store.compact()
  const after = segmentBytes(dir)
  t.ok(before > 9 * LIVE, `before: ${(before / MiB).toFixed(0)} MiB on disk`)
  t.ok(after < 1.2 * LIVE, `after: ${(after / MiB).toFixed(1)} MiB on disk for ${LIVE / MiB} MiB live (${(after / LIVE).toFixed(3)}x)`)
  t.ok(report.segmentsRecycled > 0, `${report.segmentsRecycled} segments recycled`)
  for (let off = 0; off < LIVE; off += 7 * MiB) {
    t.ok((await store.read(off, MiB)).equals(pattern(9000 + off / MiB, MiB)), `MiB ${off / MiB} reads its last version`)
  }
  t.ok((await store.verify()).ok, 'verify is clean after compaction')
  await store.close()
  const again = await Store.open(dir, NO_WINDOW)
  t.ok((await again.read(20 * MiB, MiB)).equals(pattern(9020, MiB)), 'data survives reopen')
  t.ok((await again.verify()).ok)
  await again.close()
})

t.test('with backing storage a compaction reports the versions it freed, not the archived history it judged dead again', async t => {
  // The index keeps every version backing storage holds, so each pass judged the same
  // versions dead and `compact` said "freed N" with the same N every time (helper-55).
  const dir = tmp(t)
  const archiveDir = path.join(path.dirname(dir), 'archive')
  fs.mkdirSync(archiveDir)
  await Store.create(dir, { sizeBytes: 64 * MiB, segmentBytes: 2 * MiB })
  const store = await Store.open(dir, { ...NO_WINDOW, archive: archiveLink(new DirTarget(archiveDir), readConfig(dir).uuid) })
  for (let pass = 0; pass < 3; pass++) {
    for (let off = 0; off < 8 * MiB; off += MiB) await store.write(off, pattern(pass * 100 + off / MiB, MiB))
  }
  await store.flush()
  const first = await store.compact()
  t.equal(first.versionsFreed, 2 * 8 * 256, 'the first pass frees the two overwritten passes (2 x 8 MiB of 4 KiB blocks)')
  const second = await store.compact()
  t.equal(second.versionsFreed, 0, 'a second pass with nothing new frees nothing and says so')
  t.equal(second.entriesFreed, 0)
  await store.write(0, pattern(999, MiB))
  await store.flush()
  const third = await store.compact()
  // The MiB's 256 superseded versions, and the old copies of the versions cleaning moved.
  t.ok(third.versionsFreed >= 256 && third.versionsFreed <= 256 + third.versionsMoved, `after one more MiB written: ${third.versionsFreed} freed, ${third.versionsMoved} moved`)
  t.ok((await store.read(0, MiB)).equals(pattern(999, MiB)), 'current data intact')
  t.ok((await store.verify()).ok)
  await store.close()
})

/** Every version row of the index (block, seq, position, crc), in index order. */
async function historyRows (store: Store): Promise<number[]> {
  const rows: number[] = []
  for await (const batch of (store as unknown as { p: StoreParts }).p.db.historyBatches()) rows.push(...Array.from(batch))
  return rows
}

t.test('a compaction that finds more dead versions than it holds frees them in batches, with the same result', async t => {
  // The same writes into two stores; one holds every dead version at once (the default
  // batch), the other at most 100 (a second walk commits them 100 or a read more at a time).
  const results: Array<{ report: Awaited<ReturnType<Store['compact']>>, rows: number[], snap: Buffer, current: Buffer, reclaims: number }> = []
  for (const compactionDeadBatch of [undefined, 100]) {
    const dir = tmp(t)
    await Store.create(dir, { sizeBytes: 64 * MiB, segmentBytes: 2 * MiB })
    let reclaims = 0
    const store = await Store.open(dir, { ...NO_WINDOW, compactionDeadBatch, reclaimMemory: () => { reclaims++ } })
    for (let pass = 0; pass < 6; pass++) {
      for (let off = 0; off < 16 * MiB; off += MiB) await store.write(off, pattern(pass * 100 + off / MiB, MiB))
      for (let i = 0; i < 40; i++) await store.write(((pass * 37 + i * 11) % 4096) * 4096, pattern(pass * 1000 + i, 4096))
      if (pass === 2) await store.snapshot({ name: 'mid' })
    }
    await store.flush()
    const report = await store.compact({ cleanBelow: 0 })
    results.push({ report, rows: await historyRows(store), snap: await store.readSnapshot('mid', 0, 16 * MiB), current: await store.read(0, 16 * MiB), reclaims })
    t.ok((await store.verify()).ok, `batch ${compactionDeadBatch ?? 'default'}: verify is clean`)
    await store.close()
    // The removals survive a reopen (the pass's last commit is durable).
    const again = await Store.open(dir, NO_WINDOW)
    t.same(await historyRows(again), results[results.length - 1].rows, `batch ${compactionDeadBatch ?? 'default'}: the index after a reopen`)
    await again.close()
  }
  const [held, batched] = results
  t.ok(held.report.versionsFreed > 10000, `${held.report.versionsFreed} versions freed`)
  t.equal(held.report.freeBatches, 0, 'held at once: no commit of its own')
  t.ok(batched.report.freeBatches >= 5, `${batched.report.freeBatches} commits of dead versions on the way`)
  t.equal(batched.report.versionsFreed, held.report.versionsFreed, 'the same versions freed')
  // The host may collect garbage after the walk, after each batch and at the end (reclaimMemory).
  t.equal(held.reclaims, 2, 'held at once: the host was offered to reclaim memory after the walk and at the end')
  t.equal(batched.reclaims, batched.report.freeBatches + 2, 'batched: also after each batch')
  t.equal(batched.report.bytesPunched, held.report.bytesPunched, 'the same bytes punched')
  t.same(batched.rows, held.rows, 'the same versions left in the index')
  t.ok(batched.current.equals(held.current) && batched.snap.equals(held.snap), 'the current image and the snapshot read the same')
})

t.test('deleting a snapshot then compacting frees what it alone pinned', async t => {
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 64 * MiB, segmentBytes: 4 * MiB })
  const store = await Store.open(dir, NO_WINDOW)
  for (let off = 0; off < 16 * MiB; off += MiB) await store.write(off, pattern(off, MiB))
  await store.snapshot({ name: 'old' })
  for (let off = 0; off < 8 * MiB; off += MiB) await store.write(off, pattern(100 + off, MiB)) // old alone pins 8 MiB
  await store.flush()
  await store.compact()
  const pinned = (await store.snapshotPinnedBytes()).get(store.snapshotNamed('old').seq)!
  t.equal(pinned, 8 * MiB, 'the snapshot alone pins the 8 MiB it still sees')
  const oldImage = await store.readSnapshot('old', 0, 16 * MiB)
  t.ok(oldImage.subarray(0, MiB).equals(pattern(0, MiB)), 'compaction kept what the snapshot sees')
  const before = segmentBytes(dir)
  await store.deleteSnapshot('old')
  const report = await store.compact()
  const after = segmentBytes(dir)
  t.ok(before - after >= 0.9 * pinned, `space dropped by ${((before - after) / MiB).toFixed(1)} MiB for ${pinned / MiB} MiB pinned (${report.versionsFreed} versions freed)`)
  t.ok((await store.read(0, MiB)).equals(pattern(100, MiB)), 'current data intact')
  t.ok((await store.verify()).ok)
  await store.close()
})

t.test('cleaning moves the few live versions of mostly-dead segments and recycles them', async t => {
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 64 * MiB, segmentBytes: 2 * MiB })
  const store = await Store.open(dir, NO_WINDOW)
  // 16 MiB in 128 KiB entries, then rewrite all but one 4 KiB block per 2 MiB: entries stay partly live.
  for (let off = 0; off < 16 * MiB; off += 128 * 1024) await store.write(off, pattern(off, 128 * 1024))
  await store.snapshot({ name: 's' })
  const model = Buffer.from(await store.read(0, 16 * MiB))
  const snapModel = Buffer.from(model)
  for (let off = 0; off < 16 * MiB; off += 4096) {
    if (off % (2 * MiB) === 0) continue
    const data = pattern(7 + off, 4096)
    await store.write(off, data)
    data.copy(model, off)
  }
  await store.deleteSnapshot('s')
  await store.snapshot({ name: 'keep' })
  await store.flush()
  const before = segmentBytes(dir)
  const report = await store.compact({ cleanBelow: 0.5 })
  t.ok(report.versionsMoved > 0, `${report.versionsMoved} versions moved out of ${report.segmentsCleaned} segments`)
  t.ok(segmentBytes(dir) < before, `disk use ${(before / MiB).toFixed(1)} -> ${(segmentBytes(dir) / MiB).toFixed(1)} MiB`)
  t.ok((await store.read(0, 16 * MiB)).equals(model), 'current reads like the model')
  t.ok((await store.readSnapshot('keep', 0, 16 * MiB)).equals(model), 'the snapshot reads like the model')
  await store.close()
  // A rebuild from the log alone must agree (moved versions keep their sequence numbers).
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  const rebuilt = await Store.open(dir, NO_WINDOW)
  t.ok(rebuilt.recovery.rebuiltIndex)
  t.ok((await rebuilt.read(0, 16 * MiB)).equals(model), 'current after an index rebuild')
  t.ok((await rebuilt.readSnapshot('keep', 0, 16 * MiB)).equals(model), 'snapshot after an index rebuild')
  t.ok((await rebuilt.verify()).ok)
  t.notOk(snapModel.equals(model))
  await rebuilt.close()
})

t.test('the baseline takes everything up to the oldest snapshot; every image reads the same', async t => {
  const dir = tmp(t)
  await Store.create(dir, { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB })
  const store = await Store.open(dir, NO_WINDOW)
  for (let off = 0; off < 12 * MiB; off += 256 * 1024) await store.write(off, pattern(off, 256 * 1024))
  for (let off = 0; off < 6 * MiB; off += 64 * 1024) await store.write(off + 1000, pattern(off + 5, 64 * 1024)) // unaligned rewrites
  await store.snapshot({ name: 'A' })
  for (let off = 2 * MiB; off < 8 * MiB; off += 128 * 1024) await store.write(off, pattern(off + 9, 128 * 1024))
  await store.snapshot({ name: 'B' })
  for (let off = 10 * MiB; off < 14 * MiB; off += MiB) await store.write(off, pattern(off + 11, MiB))
  await store.flush()
  const images = { A: await store.readSnapshot('A', 0, 32 * MiB), B: await store.readSnapshot('B', 0, 32 * MiB), current: await store.read(0, 32 * MiB) }
  const before = segmentBytes(dir)
  const r = await store.compactIntoBaseline()
  t.ok(r.blocks > 0, `${r.blocks} blocks merged into the baseline`)
  t.equal(r.cutSeq, store.snapshotNamed('A').seq, 'up to the oldest kept snapshot')
  t.ok(segmentBytes(dir) < before, `segments on disk ${(before / MiB).toFixed(1)} -> ${(segmentBytes(dir) / MiB).toFixed(1)} MiB`)
  const check = async (s: Store, when: string): Promise<void> => {
    t.ok((await s.readSnapshot('A', 0, 32 * MiB)).equals(images.A), `A reads the same ${when}`)
    t.ok((await s.readSnapshot('B', 0, 32 * MiB)).equals(images.B), `B reads the same ${when}`)
    t.ok((await s.read(0, 32 * MiB)).equals(images.current), `current reads the same ${when}`)
    const v = await s.verify()
    t.ok(v.ok, `verify is clean ${when}: ${v.problems.slice(0, 3).join('; ')}`)
  }
  await check(store, 'after the merge')
  await store.deleteSnapshot('A')
  const again = await store.compactIntoBaseline()
  t.equal(again.cutSeq, store.snapshotNamed('B').seq, 'a second merge goes up to B, now the oldest')
  images.A = images.B
  await store.close()
  const reopened = await Store.open(dir, NO_WINDOW)
  t.ok((await reopened.readSnapshot('B', 0, 32 * MiB)).equals(images.B), 'B after reopen')
  t.ok((await reopened.read(0, 32 * MiB)).equals(images.current), 'current after reopen')
  await reopened.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  const rebuilt = await Store.open(dir, NO_WINDOW)
  t.ok(rebuilt.recovery.rebuiltIndex, 'rebuilt from the baseline and the log')
  t.ok((await rebuilt.readSnapshot('B', 0, 32 * MiB)).equals(images.B), 'B after a rebuild')
  t.ok((await rebuilt.read(0, 32 * MiB)).equals(images.current), 'current after a rebuild')
  t.ok((await rebuilt.verify()).ok, 'verify after a rebuild')
  await rebuilt.close()
})

t.test('model: writes, snapshots, deletes, compactions, crashes and reopens', async t => {
  const seed = Number(process.env.COMPACT_SEED ?? 20261122)
  t.comment(`seed ${seed} (COMPACT_SEED to change)`)
  const size = 2 * MiB
  type Op =
    | { k: 'write', off: number, len: number, v: number }
    | { k: 'snap' } | { k: 'del', i: number } | { k: 'compact', clean: number } | { k: 'baseline' } | { k: 'archive', ws: number }
    | { k: 'reopen' } | { k: 'crash' }
  const op = fc.oneof(
    { weight: 8, arbitrary: fc.record({ k: fc.constant('write' as const), off: fc.integer({ min: 0, max: size / 2 }), len: fc.integer({ min: 1, max: 400_000 }), v: fc.integer({ min: 1, max: 1e6 }) }) },
    { weight: 2, arbitrary: fc.constant({ k: 'snap' as const }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('del' as const), i: fc.nat() }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('compact' as const), clean: fc.constantFrom(0, 0.3, 0.9) }) },
    { weight: 1, arbitrary: fc.constant({ k: 'baseline' as const }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('archive' as const), ws: fc.constantFrom(0, 1, 3) }) },
    { weight: 1, arbitrary: fc.constant({ k: 'reopen' as const }) },
    { weight: 1, arbitrary: fc.constant({ k: 'crash' as const }) }
  )
  let runs = 0
  let archivedTotal = 0
  let archiveCalls = 0
  await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 60 }), async (ops: Op[]) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-cmodel-'))
    const dir = path.join(root, 'store')
    try {
      await Store.create(dir, { sizeBytes: size, segmentBytes: 1114112 })
      // Half the runs have backing storage: compaction then archives before it punches,
      // and archived segments come back on demand.
      const archiveDir = path.join(root, 'archive')
      fs.mkdirSync(archiveDir)
      const withArchive = ops.length % 2 === 0
      const openOpts = async () => ({ ...NO_WINDOW, checkpointIntervalMs: 0, archive: withArchive ? archiveLink(new DirTarget(archiveDir), readConfig(dir).uuid) : undefined })
      let store = await Store.open(dir, await openOpts())
      const model = Buffer.alloc(size)
      const snaps = new Map<string, Buffer>()
      let n = 0
      for (const o of ops) {
        if (o.k === 'write') {
          const len = Math.min(o.len, size - o.off)
          const data = pattern(o.v, Math.ceil(len / 4) * 4).subarray(0, len)
          await store.write(o.off, data)
          data.copy(model, o.off)
        } else if (o.k === 'snap') {
          const name = `s${n++}`
          await store.snapshot({ name })
          snaps.set(name, Buffer.from(model))
        } else if (o.k === 'del' && snaps.size > 0) {
          const name = [...snaps.keys()][o.i % snaps.size]
          await store.deleteSnapshot(name)
          snaps.delete(name)
        } else if (o.k === 'compact') {
          await store.compact({ cleanBelow: o.clean })
        } else if (o.k === 'baseline') {
          await store.compactIntoBaseline()
        } else if (o.k === 'archive') {
          if (withArchive) { archiveCalls++; archivedTotal += (await store.archive({ workingSet: o.ws })).archived }
        } else if (o.k === 'reopen') {
          await store.close()
          store = await Store.open(dir, await openOpts())
        } else if (o.k === 'crash') {
          await store.flush() // kill -9 after a flush: everything must be there
          await store.abandon()
          store = await Store.open(dir, await openOpts())
        }
      }
      const current = await store.read(0, size)
      if (!current.equals(model)) throw new Error('current differs from the model')
      for (const [name, image] of snaps) {
        if (!(await store.readSnapshot(name, 0, size)).equals(image)) throw new Error(`snapshot ${name} differs from the model`)
      }
      const report = await store.verify()
      if (!report.ok) throw new Error(`verify: ${report.problems.join('; ')}`)
      await store.close()
      runs++
    } finally {
      fs.rmSync(root, { recursive: true, force: true })
    }
  }), { seed, numRuns: Number(process.env.COMPACT_RUNS ?? 40) })
  t.equal(runs, Number(process.env.COMPACT_RUNS ?? 40), 'every run held')
  t.ok(archivedTotal > 0, `${archiveCalls} archive runs, ${archivedTotal} segments archived across the runs (and read back from the archive)`)
})
