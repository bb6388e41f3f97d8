// Markers no longer pin segments for good. A segment is recycled only when every entry in it
// is free, and compaction never freed a marker: each pass that raised the history horizon,
// each deleted snapshot and each sync point left the segment it landed in counted whole by the
// pool. Measured before the fix: 40 rounds of rewriting 64 blocks and compacting left 40
// segments (one history marker each), so `compact.every` with `snapshot.every` would use up a
// pool in time with a few blocks of live data. src/store/marker-life.ts says which markers may go.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { EntryKind } from '../src/store/format'
import type { EntryRecord } from '../src/store/index-db'
import { MarkerLife } from '../src/store/marker-life'
import { PassFence } from '../src/store/pass-fence'
import type { StoreParts } from '../src/store/parts'
import { Store, type OpenOptions } from '../src/store/store'
import { scratchDir } from './helpers/sim-layer'

const B = 4096
const SEG = 258 * B // the smallest segment size, in whole pages
const BLOCKS = 64
const OPTS: Partial<OpenOptions> = { checkpointIntervalMs: 0, historyKeepMs: 0 }
const blk = (round: number, i: number): Buffer => Buffer.alloc(B, `r${round}b${i};`)

const localSegments = (s: Store): number => s.logSegments().filter(x => x.state !== 'recycled' && x.state !== 'archived').length

/** One round: 300 one-block writes over the first 64 blocks (the model follows). */
async function round (s: Store, r: number, model: Buffer): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const data = blk(r, i)
    await s.write((i % BLOCKS) * B, data)
    data.copy(model, (i % BLOCKS) * B)
  }
}

/** Closes `s`, deletes its index and opens it again: the index rebuilt from the log has the same horizon. */
async function closeAndRebuild (t: Test, s: Store, dir: string): Promise<Store> {
  const horizon = s.status().history.horizonSeq
  t.ok(horizon > 0, `the horizon rose to ${horizon}`)
  await s.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true })
  const rebuilt = await Store.open(dir, OPTS)
  t.teardown(() => rebuilt.close().catch(() => undefined))
  t.ok(rebuilt.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.equal(rebuilt.status().history.horizonSeq, horizon, 'the rebuilt horizon is the one the newest history marker kept')
  return rebuilt
}

t.test('compactions that raise the horizon do not pin a segment each', async t => {
  const dir = scratchDir(t, 'logdisk-marker-horizon')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, OPTS)
  const model = Buffer.alloc(BLOCKS * B)
  for (let r = 0; r < 24; r++) {
    await round(s, r, model)
    await s.compact({})
  }
  t.ok(localSegments(s) <= 3, `${localSegments(s)} segments after 24 compactions (24 and more before the fix)`)
  t.ok((await s.read(0, BLOCKS * B)).equals(model), 'the image reads like the model')
  const rebuilt = await closeAndRebuild(t, s, dir)
  t.ok((await rebuilt.read(0, BLOCKS * B)).equals(model), 'the image reads the same after the rebuild')
  t.ok((await rebuilt.verify()).ok, 'verify is clean')
})

t.test('deleted snapshots and sync points older than the horizon do not pin segments; a rebuild agrees', async t => {
  const dir = scratchDir(t, 'logdisk-marker-snapshots')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, OPTS)
  const model = Buffer.alloc(BLOCKS * B)
  let snapModel = Buffer.alloc(0)
  for (let r = 0; r < 24; r++) {
    await round(s, r, model)
    await s.syncPoint(`note${r}`)
    await s.snapshot({ name: `s${r}` })
    snapModel = Buffer.from(model)
    if (r > 0) await s.deleteSnapshot(`s${r - 1}`)
    await s.compact({})
  }
  t.ok(localSegments(s) <= 3, `${localSegments(s)} segments after 24 rounds of snapshot, delete, sync point and compaction`)
  const kept = s.snapshots().map(x => ({ name: x.name, seq: x.seq, id: x.id }))
  t.same(kept.map(x => x.name), ['s23'])
  let freedMarkers = 0
  const markerKinds: number[] = [EntryKind.sync, EntryKind.snapshot, EntryKind.deleteSnapshot, EntryKind.history]
  for await (const e of s.entries()) if (markerKinds.includes(e.kind) && e.freed === true) freedMarkers++
  t.ok(freedMarkers >= 60, `${freedMarkers} markers freed`)
  // The log alone: no deleted snapshot comes back, the kept one reads what it saw.
  const rebuilt = await closeAndRebuild(t, s, dir)
  t.same(rebuilt.snapshots().map(x => ({ name: x.name, seq: x.seq, id: x.id })), kept, 'the same snapshots, cuts and ids')
  t.ok((await rebuilt.readSnapshot('s23', 0, BLOCKS * B)).equals(snapModel), 'the kept snapshot reads what it saw')
  t.ok((await rebuilt.read(0, BLOCKS * B)).equals(model), 'the image reads like the model')
  await t.rejects(rebuilt.resolvePoint('note3'), /note3/, 'a sync point given up reads as gone, with its name')
  t.ok((await rebuilt.verify()).ok, 'verify is clean')
  const next = await rebuilt.snapshot({ name: 'after' })
  t.notOk(kept.some(k => k.id === next.id), `a new snapshot takes an id no kept one has (${next.id})`)
})

t.test('a snapshot deleted while a pass runs keeps its marker until the next pass', async t => {
  const dir = scratchDir(t, 'logdisk-marker-late-delete')
  await Store.create(dir, { sizeBytes: 1024 * B, blockBytes: B, segmentBytes: SEG })
  const s = await Store.open(dir, OPTS)
  t.teardown(() => s.close().catch(() => undefined))
  const model = Buffer.alloc(BLOCKS * B)
  await round(s, 0, model)
  const snap = await s.snapshot({ name: 'late' })
  for (let r = 1; r < 4; r++) await round(s, r, model)
  let deleting: Promise<unknown> | undefined
  // The first progress call comes after the fence (compaction-pass.ts): the deletion lands
  // behind it, so the pass must keep both markers (the snapshot was among the fence's cuts).
  await s.compact({}, () => { deleting ??= s.deleteSnapshot('late') })
  await deleting
  const marker = async (seq: number): Promise<boolean | undefined> => {
    for await (const e of s.entries(seq, seq)) return e.freed === true
    return undefined
  }
  t.equal(await marker(snap.seq), false, 'the marker of a snapshot deleted behind the fence stays')
  await s.snapshot({ name: 'next' }) // the newest with the highest volume id now (that marker stays)
  for (let r = 4; r < 6; r++) await round(s, r, model)
  await s.compact({})
  t.equal(await marker(snap.seq), true, 'the next pass frees it')
  let deletion: boolean | undefined
  for await (const e of s.entries()) if (e.kind === EntryKind.deleteSnapshot) deletion = e.freed === true
  t.equal(deletion, true, 'and its deletion marker with it (the snapshot marker first in the log)')
  t.ok((await s.read(0, BLOCKS * B)).equals(model))
  t.ok((await s.verify()).ok)
})

t.test('MarkerLife: each kind of marker, and the deletion marker that waits for its snapshot\'s', async t => {
  // A store's parts as the rule reads them: horizon 100, snapshot 50 standing, volume id 9 the
  // highest given out (newest at cut 80); the marker of deleted snapshot 30 already freed by an
  // earlier pass, the one of deleted snapshot 40 not; segment 3 on backing storage.
  const index = new Map<number, EntryRecord>([
    [30, { kind: EntryKind.snapshot, timeMs: 0, position: 0, block: 0, count: 0, payload: { name: 'a', id: 1 }, freed: true, bytes: 90 }],
    [40, { kind: EntryKind.snapshot, timeMs: 0, position: 0, block: 0, count: 0, payload: { name: 'b', id: 2 }, bytes: 90 }],
    [45, { kind: EntryKind.snapshot, timeMs: 0, position: 3 * SEG + 100, block: 0, count: 0, payload: { name: 'g', id: 6 }, freed: true, bytes: 90 }]
  ])
  const parts = {
    history: { horizon: 100 },
    snapshotTable: { highestId: 9, highestIdSeq: 80 },
    db: { entry: async (seq: number) => index.get(seq) },
    segments: { isArchived: (id: number) => id === 3 },
    config: { segmentBytes: SEG },
    opts: {}
  } as unknown as StoreParts
  const life = new MarkerLife(parts, new PassFence(200, 9, SEG, [50, 60]))
  const marker = (kind: number, payload: Record<string, unknown>, position = 0): EntryRecord => ({ kind, timeMs: 0, position, block: 0, count: 0, payload, bytes: 90 })
  const judged = async (seq: number, e: EntryRecord): Promise<boolean> => { await life.consider(seq, e); return life.has(seq) }
  t.ok(await judged(10, marker(EntryKind.history, { horizon: 80 })), 'a history marker below the horizon')
  t.notOk(await judged(11, marker(EntryKind.history, { horizon: 100 })), 'the one that raised it to where it is')
  t.ok(await judged(12, marker(EntryKind.sync, { note: 'x' })), 'a sync point at or before the horizon')
  t.notOk(await judged(101, marker(EntryKind.sync, { note: 'y' })), 'a sync point past it')
  t.notOk(await judged(50, marker(EntryKind.snapshot, { name: 'c', id: 3 })), 'a standing snapshot')
  t.notOk(await judged(60, marker(EntryKind.snapshot, { name: 'd', id: 4 })), 'a snapshot deleted after the fence')
  t.ok(await judged(61, marker(EntryKind.snapshot, { name: 'e', id: 5 })), 'a snapshot deleted before the fence')
  t.notOk(await judged(62, marker(EntryKind.snapshot, { name: 'f', id: 3, displaced: 50 })), 'one that took a standing snapshot\'s id')
  t.ok(await judged(63, marker(EntryKind.snapshot, { name: 'h', id: 9 })), 'an older one with the highest id')
  t.notOk(await judged(80, marker(EntryKind.snapshot, { name: 'i', id: 9 })), 'the newest with the highest id (a rebuild must know it)')
  t.ok(await judged(70, marker(EntryKind.deleteSnapshot, { name: 'e', seq: 61 })), 'a deletion whose snapshot marker this pass frees')
  t.ok(await judged(71, marker(EntryKind.deleteSnapshot, { name: 'a', seq: 30 })), 'one whose snapshot marker an earlier pass freed')
  t.notOk(await judged(72, marker(EntryKind.deleteSnapshot, { name: 'b', seq: 40 })), 'one whose snapshot marker stays (a rebuild would bring it back)')
  t.notOk(await judged(74, marker(EntryKind.deleteSnapshot, { name: 'g', seq: 45 })), 'one whose snapshot marker is still in a copy on backing storage')
  t.ok(await judged(75, marker(EntryKind.deleteSnapshot, { name: 'z', seq: 44 }, 2 * SEG)), 'one whose snapshot marker is not indexed (freed before a rebuild), none of the segments up to it archived')
  t.notOk(await judged(76, marker(EntryKind.deleteSnapshot, { name: 'y', seq: 43 }, 4 * SEG)), 'the same, with an archived segment before it (its copy may hold the marker)')
  t.notOk(await judged(73, { ...marker(EntryKind.history, { horizon: 1 }), payload: undefined }), 'a marker without its payload stays')
})
