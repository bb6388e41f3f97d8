// Lazy recovery from the replica of a store with a baseline (issue 14 item 2, "mounts in
// seconds whatever the disk's size", for a store whose old snapshots were merged into the
// baseline after replication started). Regression: the replicator shipped no index checkpoint
// at all once a store had a baseline (its rows point into baseline.img, which a replica never
// carries), so recovery fetched the whole log. Now the checkpoint points those rows back at
// the log positions the versions had when merged (baseline.pos), and recovery is lazy:
// checked byte for byte against the original (current image, a snapshot), after compaction of
// the recovered store, with every segment brought back, and with verify.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseTarget } from '../src/archive'
import { openStore } from '../src/app/open'
import { Store } from '../src/store'
import { originsFile } from '../src/store/baseline-origins'
import { Hydrator, Replicator, createFromReplica, newestManifest } from '../src/replicate'
import { imageSha, labelledPattern, newReplicatedStore, testTmp, until } from './helpers/replica-fixture'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB
const SEGMENT = 2 * MiB
const pattern = (seed: number, bytes: number): Buffer => labelledPattern('baseline', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'rbase', name)


/**
 * A replicated store whose old snapshots went into the baseline twice (the second merge
 * overwrites slots of the first), compacted after each merge (the merged log entries freed,
 * emptied segments recycled), then written on; the replica caught up with an index checkpoint
 * taken after the merges. `beforeShipping` runs once the merges are done.
 */
async function mergedAndReplicated (t: Test, beforeShipping?: (dir: string) => void): Promise<{ store: Store, replica: string }> {
  const replica = path.join(tmp(t, 'target'), 'replica')
  fs.mkdirSync(replica)
  const dir = path.join(tmp(t, 'a'), 'store')
  const store = await newReplicatedStore(dir, replica, { sizeBytes: SIZE, segmentBytes: SEGMENT }, ['history.keep=0'])
  t.teardown(() => store.close())
  const target = parseTarget(replica)
  t.teardown(() => target.close())
  const r = await Replicator.start(store, target, { spec: replica, intervalMs: 100, indexEverySegments: 2 })
  t.teardown(() => r.stop())
  await store.write(0, pattern(1, 8 * MiB))
  await store.snapshot({ name: 's1' })
  await store.write(2 * MiB, pattern(2, 4 * MiB))
  await store.snapshot({ name: 's2' })
  await store.write(4 * MiB, pattern(3, 2 * MiB))
  await store.flush()
  // The replicator must have shipped what the merges free (it gates the passes anyway).
  await until('caught up before the merges', async () => (await r.status()).lagBytes === 0)
  const first = await store.compactIntoBaseline()
  t.ok(first.blocks > 0, `first merge: ${first.blocks} blocks up to s1`)
  await store.deleteSnapshot('s1')
  const second = await store.compactIntoBaseline()
  t.ok(second.blocks > 0, `second merge: ${second.blocks} blocks up to s2, slots of the first overwritten`)
  await store.compact({ cleanBelow: 1 })
  beforeShipping?.(dir)
  const mergedAt = store.status().index.position
  await store.write(16 * MiB, pattern(4, 8 * MiB))
  await store.write(3 * MiB + 4096, pattern(5, 100_000))
  await store.flush()
  await until('the replica to catch up with an index checkpoint after the merges', async () => {
    const s = await r.status()
    const m = (await newestManifest(target))?.manifest
    return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq && (beforeShipping !== undefined || (m?.index?.position ?? 0) > mergedAt)
  })
  return { store, replica }
}

t.test('a store with a baseline is recovered lazily from its replica, byte for byte', async t => {
  const { store, replica } = await mergedAndReplicated(t)
  t.ok(fs.existsSync(originsFile(store.dir)), 'the merges wrote baseline.pos')
  const want = await imageSha(store)
  const wantS2 = await imageSha(store, 's2')
  const dir = path.join(tmp(t, 'b'), 'store')
  const target = parseTarget(replica)
  t.teardown(() => target.close())
  const rec = await createFromReplica(dir, target, { spec: replica })
  t.comment(`create --from of a store with a baseline: ${rec.seconds.toFixed(2)} s, ${rec.mode}, ${rec.bytes} bytes fetched, ${rec.remoteSegments} of ${rec.segments} segments left on the replica`)
  t.equal(rec.mode, 'lazy', 'from the index checkpoint (was: the whole log)')
  t.ok(rec.remoteSegments >= 2, 'older segments stay on the replica')
  const copy = (await openStore(dir)).store
  try {
    t.equal(await imageSha(copy), want, 'current.img is byte-identical')
    t.equal(await imageSha(copy, 's2'), wantS2, 'so is s2 (its versions are the baseline\'s)')
    t.notOk(fs.existsSync(path.join(dir, 'baseline')), 'the recovered store has no baseline: it reads the log')
    // Compaction here must not free what the original freed after merging: the copy reads it.
    await copy.compact({ cleanBelow: 1 })
    t.equal(await imageSha(copy), want, 'after compaction of the recovered store: the same image')
    const h = new Hydrator(copy)
    await h.done()
    t.same(h.pending(), [], 'every segment brought back')
    t.equal(await imageSha(copy), want, 'with every segment local: the same image')
    t.equal(await imageSha(copy, 's2'), wantS2)
    const v = await copy.verify()
    t.same(v.problems, [], 'verify finds nothing')
  } finally {
    await copy.close()
  }
})

t.test('a baseline without baseline.pos (merged by an older logdisk): no checkpoint, recovery fetches the whole log, byte for byte', async t => {
  const { store, replica } = await mergedAndReplicated(t, dir => fs.rmSync(originsFile(dir)))
  const want = await imageSha(store)
  const target = parseTarget(replica)
  t.teardown(() => target.close())
  const m = (await newestManifest(target))!.manifest
  const dir = path.join(tmp(t, 'b'), 'store')
  const rec = await createFromReplica(dir, target, { spec: replica })
  // The checkpoint named (if any) is one from before the merges: lazy from it is right too.
  t.comment(`manifest index ${m.index?.name ?? 'none'}: recovery ${rec.mode}`)
  const copy = (await openStore(dir)).store
  try {
    t.equal(await imageSha(copy), want, 'current.img is byte-identical')
  } finally {
    await copy.close()
  }
})
