// Lazy recovery from a replica (issue 14 item 2, "mounts in seconds whatever the disk's size"):
// the replicator ships index checkpoints; `create --from` loads the newest one, fetches only the
// segments after it and leaves the older ones on the replica, read on demand into the bounded
// cache. Checked byte for byte against the original (current image, a snapshot, --at after
// and before the checkpoint), with a cold first read; a replica without checkpoints (an older
// one) is still recovered by fetching the whole log.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseTarget, type ArchiveTarget } from '../src/archive'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { openStore, policyEngineFor } from '../src/app/open'
import { silentLogger } from '../src/store/logger'
import { Store } from '../src/store'
import { recordIdentity } from '../src/store/identity'
import { Hydrator, Replicator, cloneFromReplica, createFromReplica, newestManifest, replicaParentDir } from '../src/replicate'
import { REPLICA_SOURCE_FILE } from '../src/replicate/source-link'
import { startS3Server } from './helpers/s3-server'
import { imageSha as storeSha, labelledPattern, testTmp } from './helpers/replica-fixture'

t.setTimeout(600_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB
const SEGMENT = 2 * MiB

const pattern = (seed: number, bytes: number): Buffer => labelledPattern('lazy', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'lazy', name)
const sha = storeSha

async function imageSha (store: Store, seq: number): Promise<string> {
  const img = Buffer.alloc(SIZE)
  for await (const { block, data } of store.imageAt(seq)) data.copy(img, block * store.blockBytes)
  return crypto.createHash('sha256').update(img).digest('hex')
}

async function until (what: string, cond: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

const S3 = startS3Server('logdisk-lazy')
S3.catch(() => undefined)
t.teardown(async () => { await (await S3).stop() })
let prefixes = 0

interface Backend { name: string, spec: (t: Test) => string, target: (spec: string) => Promise<ArchiveTarget> }
const backends: Backend[] = [
  { name: 'directory', spec: t => { const d = path.join(tmp(t, 'target'), 'replica'); fs.mkdirSync(d); return d }, target: async spec => parseTarget(spec) },
  { name: 's3rver', spec: () => `s3://logdisk-lazy/r${++prefixes}`, target: async spec => parseTarget(spec, {}, { s3: (await S3).settings, settleMs: 300 }) }
]

/** A replicated store with 8+ sealed segments, a snapshot early, a sync point late. */
async function replicated (t: Test, b: Backend, indexEverySegments: number): Promise<{ store: Store, spec: string, r: Replicator, syncSeq: number }> {
  const spec = b.spec(t)
  const dir = path.join(tmp(t, 'a'), 'store')
  const config = await Store.create(dir, { sizeBytes: SIZE, segmentBytes: SEGMENT })
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  const store = (await openStore(dir, { checkpointIntervalMs: 100 })).store
  t.teardown(() => store.close())
  const target = await b.target(spec)
  const r = await Replicator.start(store, target, { spec, intervalMs: 100, indexEverySegments })
  t.teardown(() => r.stop())
  await store.write(0, pattern(1, 8 * MiB)) // blocks 0..8 MiB, in the oldest segments
  await store.snapshot({ name: 's1' })
  await store.write(2 * MiB, pattern(2, 2 * MiB))
  await store.flush()
  await store.write(16 * MiB, pattern(3, 6 * MiB))
  await store.flush()
  await until('the replica to catch up and name an index checkpoint', async () => {
    const s = await r.status()
    const m = indexEverySegments > 0 ? (await newestManifest(target))?.manifest : undefined
    return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq && (indexEverySegments === 0 || !!m?.index)
  })
  // After the checkpoint: a sync point, more writes (replayed on recovery).
  const sp = await store.syncPoint('late')
  await store.write(5 * MiB + 512, pattern(4, 300_000))
  await store.flush()
  await until('caught up again', async () => { const s = await r.status(); return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq })
  return { store, spec, r, syncSeq: sp.seq }
}

for (const b of backends) {
  t.test(`${b.name}: lazy recovery from the index checkpoint, byte for byte, cold reads on demand`, async t => {
    const { store, spec, syncSeq } = await replicated(t, b, 2)
    const m = (await newestManifest(await b.target(spec)))!.manifest
    t.ok(m.index, `the manifest names an index checkpoint (${m.index?.name})`)
    const want = await sha(store)
    const wantS1 = await sha(store, 's1')

    const other = path.join(tmp(t, 'b'), 'store')
    const rec = await createFromReplica(other, await b.target(spec), { spec })
    t.comment(`${b.name}: lazy create --from: ${rec.seconds.toFixed(2)} s, ${rec.bytes} bytes fetched, ${rec.remoteSegments} of ${rec.segments} segments left on the replica`)
    t.equal(rec.mode, 'lazy')
    t.ok(rec.remoteSegments >= 2, 'older segments stay on the replica')
    t.ok(rec.bytes < (rec.segments - rec.remoteSegments + 1) * SEGMENT, 'only the newer segments were fetched')
    t.equal(rec.seq, store.status().index.seq)
    t.ok(fs.existsSync(path.join(other, REPLICA_SOURCE_FILE)))
    const local = fs.readdirSync(path.join(other, 'segments')).length
    t.equal(local, rec.segments - rec.remoteSegments, `${local} segment files locally`)

    const copy = (await openStore(other)).store
    try {
      // A cold block: its newest version is in the oldest segment, which is only on the replica.
      const started = process.hrtime.bigint()
      const cold = await copy.read(0, 4096)
      const ms = Number(process.hrtime.bigint() - started) / 1e6
      t.comment(`${b.name}: first read of a cold block ${ms.toFixed(1)} ms`)
      t.same(cold, await store.read(0, 4096), 'the cold block')
      // Only the frame that holds it was fetched (test/replicate-range); reads after a few
      // fetch the segment whole into the cache.
      for (let i = 0; i < 20; i++) await copy.read(i * 65536, 4096)
      t.ok(fs.readdirSync(path.join(other, 'cache')).length >= 1, 'later reads fetched it into the cache')
      t.equal(await sha(copy), want, 'current.img is byte-identical')
      t.equal(await sha(copy, 's1'), wantS1, 'snapshot s1 too (its versions are in remote segments)')
      t.same(copy.snapshots().map(s => s.name), ['s1'])
      // The recovered store goes on: writes, a snapshot, compaction, reopen.
      await copy.write(1 * MiB, pattern(9, 1 * MiB))
      await copy.snapshot({ name: 's2' })
      await copy.flush()
      await copy.compact({ cleanBelow: 0.9 })
      const after = await sha(copy)
      await copy.close()
      const again = (await openStore(other)).store
      try {
        t.equal(await sha(again), after, 'reopened: the same image')
        t.equal(await sha(again, 's1'), wantS1, 'and s1')
        const v = await again.verify()
        t.same(v.problems, [], 'verify finds nothing')
        t.ok(v.ok)
        // The background fetch brings every segment left on the replica back into the pool.
        const h = new Hydrator(again)
        t.ok(h.pending().length >= 1, `${h.pending().length} segments still on the replica`)
        await h.done()
        t.same(h.pending(), [], 'none left')
        t.ok(h.status().done >= 1 && h.status().finished, `brought back ${h.status().done} segments, ${h.status().bytes} bytes`)
        t.equal(await sha(again), after, 'the same image with every segment local')
      } finally {
        await again.close()
      }
      if (b.name === 'directory') {
        // It stands alone: the replica gone, it opens and reads the same.
        fs.renameSync(spec, `${spec}.away`)
        try {
          const alone = (await openStore(other)).store
          try {
            t.equal(await sha(alone), after, 'without the replica: the same image')
            t.equal(await sha(alone, 's1'), wantS1, 'and s1')
          } finally {
            await alone.close()
          }
        } finally {
          fs.renameSync(`${spec}.away`, spec)
        }
      }
    } finally {
      await copy.close().catch(() => undefined)
    }

    // --at after the checkpoint: recovered lazily and cut; before it (s1): the whole log.
    for (const [at, mode] of [[String(syncSeq), 'lazy'], ['s1', 'full']] as const) {
      const d = path.join(tmp(t, 'at'), 'store')
      const rr = await createFromReplica(d, await b.target(spec), { spec, at })
      const c = (await openStore(d)).store
      try {
        t.equal(rr.mode, mode, `--at ${at}: ${mode}`)
        t.equal(rr.seq, at === 's1' ? store.snapshotNamed('s1').seq : syncSeq, `--at ${at} cuts the log there`)
        t.equal(await sha(c), await imageSha(store, rr.seq), `--at ${at}: the image as the original had it there`)
      } finally {
        await c.close()
      }
    }
  })
}

t.test('a replica without index checkpoints (an older one) is recovered by fetching the whole log', async t => {
  const b = backends[0]
  const { store, spec } = await replicated(t, b, 0)
  const m = (await newestManifest(await b.target(spec)))!.manifest
  t.notOk(m.index, 'no index checkpoint named')
  const want = await sha(store)
  const other = path.join(tmp(t, 'b'), 'store')
  const rec = await createFromReplica(other, await b.target(spec), { spec })
  t.equal(rec.mode, 'full')
  t.equal(rec.remoteSegments, 0)
  t.notOk(fs.existsSync(path.join(other, REPLICA_SOURCE_FILE)))
  const copy = (await openStore(other)).store
  t.teardown(() => copy.close())
  t.equal(await sha(copy), want, 'byte-identical')
  t.equal(await sha(copy, 's1'), await sha(store, 's1'))
})

for (const b of backends) {
  t.test(`${b.name}: clone <replica> SNAPSHOT <newstore>: reads fall through to the replica, writes stay in the clone`, async t => {
    const { store, spec } = await replicated(t, b, 2)
    const wantS1 = await sha(store, 's1')
    const base = tmp(t, 'clones')
    // Two "hosts" boot from the one golden image.
    const clones: Store[] = []
    for (const name of ['c1', 'c2']) {
      const dir = path.join(base, name)
      const r = await cloneFromReplica(await b.target(spec), spec, 's1', dir)
      t.comment(`${b.name}: clone ${name} from the replica in ${r.seconds.toFixed(2)} s (${r.recovered.mode}, ${r.recovered.bytes} bytes fetched, ${r.recovered.remoteSegments} segments left on the replica)`)
      t.equal(r.parent, replicaParentDir(dir))
      t.equal(r.recovered.mode, 'lazy')
      const c = (await openStore(dir)).store
      t.teardown(() => c.close())
      clones.push(c)
    }
    t.equal(await sha(clones[0]), wantS1, 'a clone reads the snapshot, byte for byte')
    await clones[0].write(0, pattern(30, 1 * MiB))
    await clones[0].flush()
    t.same(await clones[0].read(0, 4096), pattern(30, 4096), 'its own writes')
    t.same(await clones[0].read(1 * MiB, 4096), await store.readSnapshot('s1', 1 * MiB, 4096), 'the rest still from the snapshot')
    t.equal(await sha(clones[1]), wantS1, 'the other clone is untouched')
    let err: unknown
    try { await cloneFromReplica(await b.target(spec), spec, 'nope', path.join(base, 'c3')) } catch (e) { err = e }
    t.equal((err as { code?: string }).code, 'NOT_FOUND', 'an unknown snapshot: NOT_FOUND')
    t.notOk(fs.existsSync(replicaParentDir(path.join(base, 'c3'))), 'and nothing left behind')
    t.notOk(fs.existsSync(path.join(base, 'c3')))
  })
}

// Regression (found by hand through a mount): the policy engine's first tick replaced the
// store's archive link with one for archive.target alone, without the replica in front; reads
// of segments left on the replica then failed, and the daemon's background fetch looped on
// microtasks (bringBack returning 0), starving FUSE: writes to current.img hung.
t.test('a policy engine tick keeps the replica in front of the archive link; the background fetch never spins', async t => {
  const b = backends[0]
  const { store, spec } = await replicated(t, b, 2)
  const want = await sha(store)
  const other = path.join(tmp(t, 'b'), 'store')
  const rec = await createFromReplica(other, await b.target(spec), { spec })
  t.equal(rec.mode, 'lazy')
  const { store: copy, pool } = await openStore(other)
  t.teardown(() => copy.close())
  const engine = policyEngineFor(copy, pool, silentLogger, () => false)
  await engine.tick()
  // Without a link to the replica the background fetch must retry with a pause, not spin.
  const saved = (copy as unknown as { p: { opts: { archive?: unknown } } }).p.opts.archive
  await copy.attachArchive(undefined)
  const spin = new Hydrator(copy, silentLogger, { retryMs: 20 }).start()
  await new Promise(resolve => setTimeout(resolve, 300)) // a timer fires: the loop yields
  t.match(spin.status().lastError ?? '', /could not be brought back/, 'it says why and retries')
  await spin.stop()
  await copy.attachArchive(saved as never)
  t.equal(await sha(copy), want, 'reads of remote segments still work after a tick')
  const h = new Hydrator(copy)
  await h.done()
  t.same(h.pending(), [], 'every segment brought back')
})

// A store recovered lazily and given no archive target of its own reads its older segments
// from the replica, which takes no writes. Compaction took that link for backing storage that
// keeps history: it archived a segment before freeing anything in it, and every compaction
// that met a segment written after the recovery failed ("segment N cannot be archived: the
// store has no archive target"; a hostile test, helper-51). It compacts as a store without one.
t.test('a store recovered lazily, without an archive target of its own, compacts what it wrote since', async t => {
  const b = backends[0]
  const { store, spec } = await replicated(t, b, 2)
  const other = path.join(tmp(t, 'b'), 'store')
  const rec = await createFromReplica(other, await b.target(spec), { spec })
  t.equal(rec.mode, 'lazy')
  t.ok(rec.remoteSegments >= 2, 'older segments stay on the replica')
  writePolicy(other, applyAssignments(defaultPolicy(), ['history.keep=0']))
  const copy = (await openStore(other)).store
  t.teardown(() => copy.close())
  for (let i = 0; i < 6; i++) {
    await copy.write(24 * MiB, pattern(100 + i, 2 * MiB)) // each pass leaves the last one dead
    await copy.flush()
  }
  const want = await sha(copy)
  const report = await copy.compact({ cleanBelow: 0.9 })
  t.ok(report.versionsFreed > 0 && report.segmentsRecycled + report.runsPunched > 0, `compaction freed what the rewrites left dead (${report.versionsFreed} versions, ${report.segmentsRecycled} segments recycled, ${report.runsPunched} runs punched)`)
  t.equal(await sha(copy), want, 'the image reads the same')
  t.equal(await sha(copy, 's1'), await sha(store, 's1'), 'and s1, from the replica')
  t.ok((await copy.verify()).ok, 'verify clean')
})

// A segment brought back from the replica (the background fetch of a lazy store) that
// compaction then emptied went back on record as `archived` (0 B on disk) in a store with no
// history to keep: its state said backing storage held history for it, which only the
// replica did, for reads this store no longer makes. Recycled, as any segment compaction
// empties without an archive target.
t.test('a lazy store without history recycles the brought-back segments compaction empties', async t => {
  const b = backends[0]
  const { spec } = await replicated(t, b, 2)
  const other = path.join(tmp(t, 'c'), 'store')
  const rec = await createFromReplica(other, await b.target(spec), { spec })
  t.equal(rec.mode, 'lazy')
  writePolicy(other, applyAssignments(defaultPolicy(), ['history.keep=0']))
  const copy = (await openStore(other)).store
  let open = true
  t.teardown(async () => { if (open) await copy.close() })
  const remoteBefore = copy.status().segments.archived
  t.ok(remoteBefore >= 2, `older segments only on the replica (${remoteBefore})`)
  for (const s of copy.logSegments().filter(s => s.state === 'archived')) await copy.bringBackSegment(s.id)
  t.equal(copy.status().segments.archived, 0, 'every segment is local again (as the background fetch leaves them)')
  await copy.deleteSnapshot('s1')
  // Every block the brought-back segments hold is written again: nothing there is live.
  await copy.write(0, pattern(200, SIZE))
  await copy.flush()
  const want = await sha(copy)
  const recycledBefore = copy.status().segments.recycled
  const report = await copy.compact({ cleanBelow: 1 })
  const after = copy.status().segments
  t.ok(report.segmentsRecycled >= remoteBefore, `compaction emptied them (${report.segmentsRecycled} segments)`)
  t.equal(after.archived, 0, 'none is counted as archived')
  t.ok(after.recycled >= recycledBefore + remoteBefore, `they are counted as recycled (${recycledBefore} -> ${after.recycled})`)
  t.equal(await sha(copy), want, 'the image reads the same')
  await copy.close()
  open = false
  const again = (await openStore(other)).store
  try {
    t.equal(again.status().segments.archived, 0, 'after a reopen too')
    t.equal(await sha(again), want, 'and reads the same')
    t.ok((await again.verify()).ok, 'verify clean')
  } finally { await again.close() }
})
