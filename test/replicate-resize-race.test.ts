// A resize that finishes while a replication round ships (helper-97's A1). A round reads its
// point P, ships the log up to it, then writes the manifest with store.json: read then, it
// carried the resize's new size, while the resize's marker lay after P, which the replica
// lacks. The source dying before the next round, a store recovered from the replica (create
// --from) had a size the volume never had at its log's end: restore --at a point before the
// resize was cut to the new size, and after a discard, a compaction and a shrink in the window
// the recovered store held a live block past its end (verify ok; a shrink refused, a grow read
// the old data there instead of zeros). The manifest carries the size at P now
// (Store.sizeAtSettled). Deterministic: the resize runs from the target's first tail put.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseTarget, type ArchiveTarget } from '../src/archive'
import { openStore } from '../src/app/open'
import { restoreImage } from '../src/copy/restore'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { Replicator, createFromReplica, newestManifest } from '../src/replicate'
import { Store } from '../src/store'
import { recordIdentity } from '../src/store/identity'
import { labelledPattern, testTmp } from './helpers/replica-fixture'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 4 * MiB
const SEGMENT = 1114112
const pat = (label: string, bytes: number): Buffer => labelledPattern('resize-race', label.length * 7919 + label.charCodeAt(label.length - 1), bytes)

/** `inner`, whose first put of a tail object runs `hook` first (the round has read its point by then). */
function hookedTarget (inner: ArchiveTarget, hook: { run?: () => Promise<void> }): ArchiveTarget {
  return new Proxy(inner, {
    get (o, p, r) {
      const v = Reflect.get(o, p, r)
      if (typeof v !== 'function') return v
      if (p !== 'put') return v.bind(o)
      return async (name: string, ...rest: unknown[]) => {
        const run = hook.run
        if (run && name.includes('tail-')) { hook.run = undefined; await run() }
        return v.call(o, name, ...rest)
      }
    }
  })
}

for (const mode of ['shrink', 'grow', 'trimshrink'] as const) {
  t.test(`${mode} during a round: the manifest carries the size at its point, a store recovered from it the volume as it was there`, async t => {
    const root = testTmp(t, 'resize-race', mode)
    const spec = path.join(root, 'replica')
    fs.mkdirSync(spec)
    const dir = path.join(root, 'a')
    const config = await Store.create(dir, { sizeBytes: SIZE, segmentBytes: SEGMENT })
    recordIdentity(dir, config)
    writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`, ...(mode === 'trimshrink' ? ['history.keep=0'] : [])]))
    const store = (await openStore(dir, { checkpointIntervalMs: 0, ...(mode === 'trimshrink' ? { historyKeepMs: 0 } : {}) })).store
    t.teardown(() => store.close().catch(() => undefined))
    const hook: { run?: () => Promise<void> } = {}
    const r = await Replicator.start(store, hookedTarget(parseTarget(spec), hook), { spec, timer: false, leaseTtlMs: 600_000, persist: false })
    t.teardown(() => r.stop().catch(() => undefined))

    const low = pat('low', 512 * KiB)
    const high = pat('high', 64 * KiB)
    await store.write(0, low)
    if (mode === 'trimshrink') {
      await store.write(3 * MiB, high)
      for (let i = 0; i < 40; i++) await store.write((i % 8) * 64 * KiB, pat(`x${i}`, 64 * KiB))
    }
    const before = await store.syncPoint('before')
    await store.flush()
    await r.tick()
    await store.write(512 * KiB, low.subarray(0, 64 * KiB))
    await store.flush()

    const to = mode === 'grow' ? 2 * SIZE : SIZE / 2
    let resized: unknown
    hook.run = async () => {
      if (mode === 'trimshrink') {
        // The block past the new end discarded and compacted away: the shrink may go.
        await store.discard(2 * MiB, 2 * MiB)
        await store.flush()
        await store.compact()
      }
      resized = await store.resize(to)
    }
    await r.tick()
    t.same(resized, { fromBytes: SIZE, toBytes: to }, 'the resize ran while the round shipped (between its point and its manifest)')
    t.equal(store.sizeBytes, to, 'the source has the new size')

    const newest = await newestManifest(parseTarget(spec))
    const point = newest!.manifest.point
    t.ok(point.seq < store.status().index.seq, 'the resize marker lies after the manifest\'s point')
    t.equal(store.sizeAt(point.seq), SIZE, 'at that point the source\'s volume had the old size')
    t.equal((newest!.manifest.store as { sizeBytes: number }).sizeBytes, SIZE, 'the manifest carries the size at its point, not the size now')

    // The source dies here: what a new host recovers is the replica as it is now.
    const copy = path.join(root, 'replica-copy')
    fs.cpSync(spec, copy, { recursive: true })
    const b = path.join(root, 'b')
    await createFromReplica(b, parseTarget(copy), { spec: copy })
    const rec = (await openStore(b, {}, [], 'read')).store
    t.teardown(() => rec.close().catch(() => undefined))
    t.equal(rec.sizeBytes, SIZE, 'the recovered store has the size the volume had at the end of its log')
    const p = await rec.resolvePoint('before')
    t.equal(p.seq, before.seq, 'the point before the resize is there')
    t.equal(rec.sizeAt(p.seq), SIZE, 'its size there is the old one')
    const img = path.join(root, 'before.img')
    await restoreImage(rec, p.seq, img)
    t.equal(fs.statSync(img).size, SIZE, 'restore --at the point before the resize gives an image of the old size')
    if (mode !== 'trimshrink') t.ok(fs.readFileSync(img).subarray(0, 512 * KiB).equals(low), 'with the data written before it')
    else {
      // The discard is after the point too: the block past the new size is live there, and
      // lies inside the recovered volume (before the fix: past its end).
      t.ok((await rec.read(3 * MiB, 64 * KiB)).equals(high), 'the block the shrink needed gone is live at the point, inside the volume')
    }
    await rec.close()

    // The source lives on: the next round ships the marker, and the new size with it.
    await r.tick()
    const next = await newestManifest(parseTarget(spec))
    t.ok(next!.manifest.point.seq >= store.status().index.seq, 'the next round ships up to the resize marker')
    t.equal((next!.manifest.store as { sizeBytes: number }).sizeBytes, to, 'and its manifest carries the new size')
  })
}

t.test('a snapshot taken during a round is not in that round\'s manifest, whose point lies before it; the next one lists it', async t => {
  const root = testTmp(t, 'resize-race', 'snapshot')
  const spec = path.join(root, 'replica')
  fs.mkdirSync(spec)
  const dir = path.join(root, 'a')
  const config = await Store.create(dir, { sizeBytes: SIZE, segmentBytes: SEGMENT })
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  const store = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  t.teardown(() => store.close().catch(() => undefined))
  const hook: { run?: () => Promise<void> } = {}
  const r = await Replicator.start(store, hookedTarget(parseTarget(spec), hook), { spec, timer: false, leaseTtlMs: 600_000, persist: false })
  t.teardown(() => r.stop().catch(() => undefined))
  await store.write(0, pat('one', 64 * KiB))
  await store.snapshot({ name: 'early' })
  await store.flush()
  await r.tick()
  await store.write(0, pat('two', 64 * KiB))
  await store.flush()
  hook.run = async () => { await store.snapshot({ name: 'late' }) }
  await r.tick()
  const newest = await newestManifest(parseTarget(spec))
  const names = newest!.manifest.snapshots.map(s => s.name)
  const late = store.snapshots().find(s => s.name === 'late')!
  t.ok(late.seq > newest!.manifest.point.seq, 'the snapshot lies after the manifest\'s point')
  t.same(names, ['early'], 'the manifest lists only the snapshots at or before its point')
  await r.tick()
  const next = await newestManifest(parseTarget(spec))
  t.same(next!.manifest.snapshots.map(s => s.name), ['early', 'late'], 'the next round ships it and lists it')
})
