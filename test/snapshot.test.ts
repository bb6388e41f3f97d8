import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { LogdiskError } from '../src/errors'
import { ops } from '../src/ops/ops'
import { EntryKind } from '../src/store/format'
import { restoreImage } from '../src/copy/restore'
import type { EntryRecord } from '../src/store/index-db'
import type { VolumeIdPolicy } from '../src/store/snapshots'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'

/**
 * Store-level snapshot tests (no FUSE): snapshot images, restore, points in the log, volume
 * ids, pinned bytes, the entry list. Every image is compared byte for byte with a Buffer that
 * the test kept of the volume at that moment.
 */
const B = 4096
const SEGMENT = 1114112 // 1 MiB + 64 KiB: the smallest round size that fits a 256-block entry
const OPEN: OpenOptions = { checkpointIntervalMs: 0 }

/** A store in its own tmp dir, closed and removed at teardown. */
class Harness {
  store!: Store
  constructor (readonly dir: string) {}

  static async make (t: Test, sizeBytes: number, segmentBytes = SEGMENT, open: OpenOptions = OPEN): Promise<Harness> {
    const h = new Harness(fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-snap-')))
    t.teardown(async () => {
      await h.store?.close().catch(() => undefined)
      fs.rmSync(h.dir, { recursive: true, force: true })
    })
    await Store.create(path.join(h.dir, 'store'), { sizeBytes, blockBytes: B, segmentBytes })
    h.store = await Store.open(path.join(h.dir, 'store'), open)
    return h
  }

  get storeDir (): string { return path.join(this.dir, 'store') }
  file (name: string): string { return path.join(this.dir, name) }

  async reopen (open: OpenOptions = OPEN): Promise<Store> {
    await this.store.close()
    this.store = await Store.open(this.storeDir, open)
    return this.store
  }

  /** Closes, deletes the whole LevelDB index and reopens: everything comes from the log. */
  async rebuild (): Promise<Store> {
    await this.store.close()
    fs.rmSync(path.join(this.storeDir, 'index'), { recursive: true, force: true })
    this.store = await Store.open(this.storeDir, OPEN)
    return this.store
  }
}

/** The error code a call fails with (undefined when it does not fail). */
async function codeOf (fn: () => unknown): Promise<string | undefined> {
  try {
    await fn()
  } catch (err) {
    if (err instanceof LogdiskError) return err.code
    return `not a LogdiskError: ${String(err)}`
  }
  return undefined
}

/** Writes to the store and to the model copy. */
async function put (store: Store, model: Buffer, offset: number, data: Buffer): Promise<void> {
  await store.write(offset, data)
  data.copy(model, offset)
}

function sameBytes (t: Test, got: Buffer, want: Buffer, what: string): void {
  if (got.length !== want.length) {
    t.fail(`${what}: length ${got.length}, want ${want.length}`)
    return
  }
  const at = got.findIndex((v, i) => v !== want[i])
  if (at === -1) t.pass(`${what}: ${got.length} bytes identical`)
  else t.fail(`${what}: first difference at byte ${at} (block ${Math.floor(at / B)}): got ${got[at]}, want ${want[at]}`)
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('readSnapshot returns every block as it was at the cut; survives reopen and an index rebuild', async t => {
  const SIZE = 4 * 1024 * 1024
  const h = await Harness.make(t, SIZE)
  const rng = new Rng(0x5a17)
  const model = Buffer.alloc(SIZE)

  // A: 3 MiB of data (segments roll: each holds a little over 1 MiB), the last MiB never written.
  for (let off = 0; off < 3 * 1024 * 1024; off += 256 * 1024) await put(h.store, model, off, rng.bytes(256 * 1024))
  const atS1 = Buffer.from(model)
  const s1 = await h.store.snapshot({ name: 's1' })

  // Aligned and unaligned overwrites, one across a block boundary, one into the never-written tail.
  await put(h.store, model, 10 * B, rng.bytes(2 * B))
  await put(h.store, model, 12345, rng.bytes(777))
  await put(h.store, model, 700 * B - 3, rng.bytes(10))
  await put(h.store, model, SIZE - 100, rng.bytes(100))
  await put(h.store, model, 0, rng.bytes(1))
  const atS2 = Buffer.from(model)
  const s2 = await h.store.snapshot({ name: 's2' })

  // More writes after s2: some over blocks s1 and s2 share, some over blocks only s2 changed.
  await put(h.store, model, 10 * B + 100, rng.bytes(B))
  await put(h.store, model, 500 * B, rng.bytes(300 * B))
  await put(h.store, model, 3 * 1024 * 1024 + 5, rng.bytes(50))
  const now = Buffer.from(model)

  t.notOk(atS1.equals(atS2), 'the snapshots differ (else the test proves nothing)')
  t.notOk(atS2.equals(now), 'current differs from s2')
  t.ok(s1.seq < s2.seq, 'cuts in log order')
  t.same(h.store.snapshots().map(s => s.name), ['s1', 's2'])

  const check = async (store: Store, when: string): Promise<void> => {
    sameBytes(t, await store.readSnapshot('s1', 0, SIZE), atS1, `${when}: s1`)
    sameBytes(t, await store.readSnapshot('s2', 0, SIZE), atS2, `${when}: s2`)
    sameBytes(t, await store.read(0, SIZE), now, `${when}: current`)
    // Unaligned partial reads, and reads clipped at the end of the volume.
    sameBytes(t, await store.readSnapshot('s1', 12000, 5000), atS1.subarray(12000, 17000), `${when}: s1 unaligned part`)
    sameBytes(t, await store.readSnapshot('s2', 700 * B - 10, 30), atS2.subarray(700 * B - 10, 700 * B + 20), `${when}: s2 across a block boundary`)
    sameBytes(t, await store.readSnapshot('s2', SIZE - 50, 1000), atS2.subarray(SIZE - 50), `${when}: s2 clipped at the end`)
    sameBytes(t, await store.readSnapshot('s1', SIZE - 50, 1000), Buffer.alloc(50), `${when}: s1 never-written tail is zeros`)
  }
  await check(h.store, 'live')
  const before = h.store.snapshots()
  t.same(before.map(s => [s.name, s.seq, s.id]), [['s1', s1.seq, s1.id], ['s2', s2.seq, s2.id]])

  await h.reopen()
  t.same(h.store.snapshots(), before, 'the snapshot table survives close + reopen')
  await check(h.store, 'after reopen')

  // Default checkpointing (timer) this time, to cover both paths.
  await h.reopen({})
  await check(h.store, 'reopened with the default checkpoint interval')

  await h.rebuild()
  t.equal(h.store.recovery.rebuiltIndex, true, 'the index was rebuilt from the log')
  t.same(h.store.snapshots(), before, 'snapshots come back from the log\'s markers')
  await check(h.store, 'after an index rebuild')
})

t.test('a snapshot reads right as soon as it is listed, before the index has caught up with its cut', async t => {
  // A snapshot is listed once its marker is in the log; the index catches up later. A read
  // then (a FUSE read of the new .img while current.img is being written) must still see the
  // cut: blocks rewritten after it are looked up in the index, which must cover the cut first.
  // A big unindexed batch before the cut makes the catching up slow enough to race with.
  const h = await Harness.make(t, 32 * 1024 * 1024, 64 * 1024 * 1024, { checkpointIntervalMs: 0, checkpointMaxBlocks: 1e9 })
  for (let round = 1; round <= 3; round++) {
    const chunk = Buffer.alloc(256 * B, round)
    for (let b = 0; b < 4096; b += 256) await h.store.write(b * B, chunk)
    const snapping = h.store.snapshot({ name: `s${round}` })
    await h.store.write(0, Buffer.alloc(B, 100 + round)) // queued behind the marker: lands after the cut
    t.ok(h.store.snapshots().some(s => s.name === `s${round}`), 'the snapshot is listed')
    const early = await h.store.readSnapshot(`s${round}`, 0, 2 * B)
    t.ok(early.equals(Buffer.alloc(2 * B, round)), `round ${round}: block 0 as at the cut (got ${early[0]}, want ${round})`)
    await snapping
    const late = await h.store.readSnapshot(`s${round}`, 0, 2 * B)
    t.ok(late.equals(Buffer.alloc(2 * B, round)), `round ${round}: the same once snapshot() resolved`)
  }
})

t.test('restoreImage at a snapshot equals readSnapshot byte for byte, and is sparse', async t => {
  const SIZE = 64 * 1024 * 1024
  const h = await Harness.make(t, SIZE)
  const rng = new Rng(77)
  const model = Buffer.alloc(SIZE)
  await put(h.store, model, 0, rng.bytes(B))
  await put(h.store, model, 33 * 1024 * 1024 + 17, rng.bytes(4100)) // spans two blocks
  await put(h.store, model, SIZE - B, rng.bytes(B))
  await put(h.store, model, 5 * B, Buffer.alloc(B)) // an explicit block of zeros: a hole in the restore
  const snap = await h.store.snapshot({ name: 'little' })
  await put(h.store, model, 0, rng.bytes(B)) // after the cut: must not show
  await put(h.store, model, 40 * B, rng.bytes(B))

  const out = h.file('little.img')
  const result = await restoreImage(h.store, snap.seq, out)
  t.equal(result.blocks, 4, 'four non-zero blocks at the cut; the block of zeros is left a hole')
  const image = fs.readFileSync(out)
  t.equal(image.length, SIZE, 'the restored file has the volume size')
  sameBytes(t, image, await h.store.readSnapshot('little', 0, SIZE), 'restore vs readSnapshot')
  t.ok(image.subarray(B, 33 * 1024 * 1024).every(b => b === 0), 'holes read as zeros')
  t.notOk(fs.existsSync(`${out}.partial`), 'no temporary file left behind')
  const allocated = fs.statSync(out).blocks * 512
  t.ok(allocated <= 256 * 1024, `sparse: ${allocated} bytes allocated for a ${SIZE}-byte image`)
})

t.test('restore at a sync point equals the snapshot taken right after it', async t => {
  const SIZE = 4 * 1024 * 1024
  const h = await Harness.make(t, SIZE)
  const rng = new Rng(3)
  const model = Buffer.alloc(SIZE)
  for (let i = 0; i < 20; i++) await put(h.store, model, rng.int(SIZE - 70000), rng.bytes(1 + rng.int(70000)))
  const point = await h.store.syncPoint('before-upgrade')
  const snap = await h.store.snapshot({ name: 'right-after' })
  t.equal(snap.seq, point.seq + 1, 'nothing between the sync point and the snapshot')
  for (let i = 0; i < 10; i++) await put(h.store, model, rng.int(SIZE - 70000), rng.bytes(1 + rng.int(70000)))

  const atSync = h.file('sync.img')
  const atSnap = h.file('snap.img')
  await restoreImage(h.store, point.seq, atSync)
  await restoreImage(h.store, snap.seq, atSnap)
  const a = fs.readFileSync(atSync)
  sameBytes(t, a, fs.readFileSync(atSnap), 'restore at the sync point vs at the snapshot')
  sameBytes(t, a, await h.store.readSnapshot('right-after', 0, SIZE), 'restore at the sync point vs readSnapshot')
  t.notOk(a.equals(model), 'the writes after the point are not in it')
})

t.test('resolvePoint: a time between two writes gives the first write\'s state', async t => {
  const h = await Harness.make(t, 1024 * 1024)
  await h.store.write(0, Buffer.alloc(B, 0xaa))
  await sleep(20)
  const between = new Date().toISOString()
  await sleep(20)
  await h.store.write(0, Buffer.alloc(B, 0xbb))
  const entries: Array<EntryRecord & { seq: number }> = []
  for await (const e of h.store.entries()) entries.push(e)
  t.same(entries.map(e => e.kind), [EntryKind.write, EntryKind.write])

  const p = await h.store.resolvePoint(between)
  t.equal(p.seq, entries[0].seq, 'the newest entry at or before the time')
  t.ok(p.timeMs <= Date.parse(between), 'the point\'s time is not after the time asked')
  const out = h.file('between.img')
  await restoreImage(h.store, p.seq, out)
  const block0 = fs.readFileSync(out).subarray(0, B)
  t.ok(block0.equals(Buffer.alloc(B, 0xaa)), 'the restored block holds the first write')
  t.notOk(block0.equals(Buffer.alloc(B, 0xbb)), 'and not the second')

  const late = await h.store.resolvePoint(new Date(entries[1].timeMs).toISOString())
  t.equal(late.seq, entries[1].seq, 'the exact time of the second write gives the second write')
})

t.test('resolvePoint by sync note, sequence number and snapshot name', async t => {
  const h = await Harness.make(t, 1024 * 1024)
  await h.store.write(0, Buffer.alloc(B, 1))
  const first = await h.store.syncPoint('nightly')
  await h.store.write(0, Buffer.alloc(B, 2))
  const other = await h.store.syncPoint('other')
  const second = await h.store.syncPoint('nightly')
  const snap = await h.store.snapshot({ name: 'nightly-snap' })
  await h.store.write(0, Buffer.alloc(B, 3))

  const byNote = await h.store.resolvePoint('nightly')
  t.equal(byNote.seq, second.seq, 'a note names the newest sync with it')
  t.equal(byNote.timeMs, second.timeMs)
  t.not(byNote.seq, first.seq)
  t.equal((await h.store.resolvePoint('other')).seq, other.seq)

  const bySeq = await h.store.resolvePoint(String(first.seq))
  t.equal(bySeq.seq, first.seq, 'a sync point\'s id is its sequence number')
  t.equal(bySeq.timeMs, first.timeMs)
  t.equal((await h.store.resolvePoint('1')).seq, 1, 'any sequence in the log')

  const byName = await h.store.resolvePoint('nightly-snap')
  t.equal(byName.seq, snap.seq)
  t.equal(byName.timeMs, snap.timeMs)
  t.match(byName.what, /nightly-snap/)

  // The point's state is the state at that sequence.
  const out = h.file('first.img')
  await restoreImage(h.store, bySeq.seq, out)
  t.ok(fs.readFileSync(out).subarray(0, B).equals(Buffer.alloc(B, 1)))
})

t.test('bad input fails with the right error code and changes nothing', async t => {
  const SIZE = 1024 * 1024
  const h = await Harness.make(t, SIZE)
  t.equal(await codeOf(() => h.store.resolvePoint('1')), 'NOT_FOUND', 'resolvePoint on an empty log')
  t.equal(await codeOf(() => h.store.resolvePoint('anything')), 'NOT_FOUND', 'resolvePoint of anything on an empty log')

  await h.store.write(0, Buffer.alloc(B, 9))
  await h.store.snapshot({ name: 'keep' })
  const seqOf = (): number => h.store.status().index.seq
  const seq = seqOf()

  t.equal(await codeOf(() => h.store.readSnapshot('nope', 0, B)), 'NOT_FOUND', 'readSnapshot of an unknown name')
  let thrown: unknown
  let pending: Promise<Buffer> | undefined
  try { pending = h.store.readSnapshot('nope', 0, B) } catch (err) { thrown = err }
  t.equal(thrown, undefined, 'readSnapshot rejects rather than throws (FUSE read handlers only attach .then)')
  await pending?.catch(() => undefined)
  t.equal(await codeOf(() => h.store.deleteSnapshot('nope')), 'NOT_FOUND', 'deleteSnapshot of an unknown name')
  t.equal(await codeOf(() => h.store.snapshot({ name: 'keep' })), 'BAD_ARGUMENT', 'duplicate name')
  for (const name of ['current', 'x.img', '', 'a/b', '.hidden', 'x'.repeat(129), 'sp ace']) {
    t.equal(await codeOf(() => h.store.snapshot({ name })), 'BAD_ARGUMENT', `bad name ${JSON.stringify(name)}`)
  }
  t.equal(seqOf(), seq, 'refused snapshots append nothing to the log')
  t.same(h.store.snapshots().map(s => s.name), ['keep'])

  const firstTime = (await h.store.resolvePoint('1')).timeMs
  t.equal(await codeOf(() => h.store.resolvePoint(new Date(firstTime - 1000).toISOString())), 'BAD_ARGUMENT', 'a time before the first write')
  t.equal(await codeOf(() => h.store.resolvePoint(new Date(Date.now() + 3600_000).toISOString())), 'BAD_ARGUMENT', 'a time in the future')
  t.equal(await codeOf(() => h.store.resolvePoint('2024-13-45T99:00:00Z')), 'BAD_ARGUMENT', 'a time that does not parse')
  t.equal(await codeOf(() => h.store.resolvePoint(String(seq + 1))), 'BAD_ARGUMENT', 'a sequence beyond the log')
  t.equal(await codeOf(() => h.store.resolvePoint('0')), 'BAD_ARGUMENT', 'sequence 0')
  t.equal(await codeOf(() => h.store.resolvePoint('no such point')), 'NOT_FOUND', 'garbage')
  t.equal(await codeOf(() => h.store.resolvePoint(String(seq))), undefined, 'the last sequence is fine')

  // restoreImage onto an existing file: refused without force, the file untouched.
  const out = h.file('exists.img')
  fs.writeFileSync(out, 'precious')
  t.equal(await codeOf(() => restoreImage(h.store, seq, out)), 'BAD_ARGUMENT', 'restore onto an existing file without force')
  t.equal(fs.readFileSync(out, 'utf8'), 'precious', 'the file is unchanged')
  t.notOk(fs.existsSync(`${out}.partial`))
  await restoreImage(h.store, seq, out, { force: true })
  sameBytes(t, fs.readFileSync(out), await h.store.readSnapshot('keep', 0, SIZE), 'with force it is overwritten by the image')
  t.equal(await codeOf(() => ops.restore(h.store, { at: String(seq), out: 'relative.img' }, {})), 'BAD_ARGUMENT', 'the restore op wants an absolute --out')
})

t.test('volume ids', async t => {
  const h = await Harness.make(t, 1024 * 1024)
  const seq: VolumeIdPolicy = { mode: 'sequential', constant: 1, reuse: true }
  const noReuse: VolumeIdPolicy = { ...seq, reuse: false }
  const snap = async (name: string, idPolicy?: VolumeIdPolicy, id?: number): Promise<number | null> => (await h.store.snapshot({ name, idPolicy, id })).id
  const ids = (): Record<string, number | null> => Object.fromEntries(h.store.snapshots().map(s => [s.name, s.id]))

  t.equal(await snap('a'), 1, 'the default policy is sequential')
  t.equal(await snap('b', seq), 2)
  t.equal(await snap('c', seq), 3)
  await h.store.deleteSnapshot('b')
  t.equal(await snap('d', seq), 2, 'sequential with reuse takes the lowest free id')
  await h.store.deleteSnapshot('d')
  t.equal(await snap('e', noReuse), 4, 'sequential without reuse continues past the highest id ever given')
  t.equal(await snap('f', seq), 2, 'reuse again fills the hole')

  t.equal(await codeOf(() => snap('g', { ...seq, mode: 'explicit' })), 'BAD_ARGUMENT', 'explicit policy without an id')
  t.equal(await snap('g', { ...seq, mode: 'explicit' }, 7), 7, 'explicit policy with an id')
  t.equal(await codeOf(() => snap('h', seq, 7)), 'BAD_ARGUMENT', 'an explicit id in use')
  t.equal(await codeOf(() => snap('h', seq, 0)), 'BAD_ARGUMENT', 'id 0')
  t.equal(await codeOf(() => snap('h', seq, 1.5)), 'BAD_ARGUMENT', 'id 1.5')
  t.equal(await snap('h', noReuse), 8, 'an explicit id raises the highest id')

  const constant: VolumeIdPolicy = { mode: 'constant', constant: 9, reuse: true }
  t.equal(await snap('k1', constant), 9, 'constant policy')
  t.equal(await snap('k2', constant), 9, 'constant policy again')
  const want = { a: 1, c: 3, e: 4, f: 2, g: 7, h: 8, k1: null, k2: 9 }
  t.same(ids(), want, 'the previous holder of the constant id has none now')
  t.equal(await snap('k3', noReuse), 10, 'the highest id is 9')
  t.equal(await snap('k4', constant), 9, 'and the constant moves on')
  t.same(ids(), { ...want, k2: null, k3: 10, k4: 9 })
  await h.store.deleteSnapshot('k3') // the highest id ever given belongs to no snapshot now

  const after = ids()
  await h.reopen()
  t.same(ids(), after, 'ids survive reopen')
  t.equal(await snap('m', noReuse), 11, 'the highest id survives reopen')
  await h.store.deleteSnapshot('m')
  const rebuilt = ids()
  await h.rebuild()
  t.same(ids(), rebuilt, 'ids survive an index rebuild')
  await h.reopen() // the rebuilt index alone must carry the highest id now
  t.same(ids(), rebuilt, 'and the reopen after it')
  t.equal(await snap('n', noReuse), 12, 'the highest id is rebuilt from the log, deleted snapshots included')
  t.equal(await snap('o', seq), 5, 'reuse after rebuild')
})

t.test('snapshotPinnedBytes counts the versions only that snapshot sees', async t => {
  const h = await Harness.make(t, 1024 * 1024)
  const rng = new Rng(5)
  await h.store.write(0, rng.bytes(10 * B)) // blocks 0..9
  await h.store.write(7 * B, rng.bytes(B)) // block 7 rewritten before any cut: its first version is seen by nobody
  const s1 = await h.store.snapshot({ name: 's1' })
  t.same([...(await h.store.snapshotPinnedBytes())], [[s1.seq, 0]], 'nothing is pinned while current uses every version s1 sees')
  await h.store.write(0, rng.bytes(5 * B)) // blocks 0..4
  const s2 = await h.store.snapshot({ name: 's2' })
  await h.store.write(0, rng.bytes(2 * B)) // blocks 0..1
  await h.store.write(9 * B + 1, rng.bytes(10)) // block 9: its first version is seen by s1 and s2
  await h.store.write(3 * B, rng.bytes(B)) // block 3 again...
  await h.store.write(3 * B, rng.bytes(B)) // ...twice: the version between is seen by no snapshot

  // s1 sees blocks 0..4 first versions, which current no longer uses and s2 does not see: 5 blocks.
  // s2 sees blocks 0..4 second versions; current still uses 2 and 4; 0, 1, 3 are rewritten: 3 blocks.
  // Block 9's first version is seen by both: pinned by neither.
  let pinned = await h.store.snapshotPinnedBytes()
  t.same([...pinned], [[s1.seq, 5 * B], [s2.seq, 3 * B]], 'per cut seq, in log order')

  await h.store.deleteSnapshot('s2')
  pinned = await h.store.snapshotPinnedBytes()
  t.same([...pinned], [[s1.seq, 6 * B]], 's1 alone sees block 9\'s old version now')
  const listed = await ops.snapshots(h.store, {}, {}) as Array<{ name: string, pinnedBytes: number }>
  t.same(listed.map(s => [s.name, s.pinnedBytes]), [['s1', 6 * B]], 'the snapshots op shows the same numbers')

  await h.reopen()
  t.same([...(await h.store.snapshotPinnedBytes())], [[s1.seq, 6 * B]], 'the same after reopen')
  await h.store.deleteSnapshot('s1')
  t.same([...(await h.store.snapshotPinnedBytes())], [], 'no snapshots, nothing pinned')
})

t.test('entries() lists writes and markers in order; the log op lists one snapshot\'s partition', async t => {
  const h = await Harness.make(t, 4 * 1024 * 1024, 64 * 1024 * 1024) // one segment: entries split only at 256 blocks
  const rng = new Rng(11)
  await h.store.write(0, rng.bytes(B))
  await h.store.write(B + 5, rng.bytes(300 * B)) // 301 blocks: more than one entry holds
  const a = await h.store.snapshot({ name: 'a' })
  await h.store.write(100 * B, rng.bytes(2 * B))
  const sync = await h.store.syncPoint('mid', true)
  await h.store.write(200 * B, rng.bytes(B))
  const b = await h.store.snapshot({ name: 'b' })
  await h.store.deleteSnapshot('a')
  await h.store.write(0, rng.bytes(B))

  const all: Array<EntryRecord & { seq: number }> = []
  for await (const e of h.store.entries()) all.push(e)
  t.same(all.map(e => e.seq), all.map((_, i) => i + 1), 'every sequence number once, in order')
  t.equal(all.length, h.store.status().index.seq)
  t.ok(all.every((e, i) => i === 0 || e.timeMs >= all[i - 1].timeMs), 'times never decrease')
  t.same(all.map(e => e.kind), [
    EntryKind.write, EntryKind.write, EntryKind.write, EntryKind.snapshot,
    EntryKind.write, EntryKind.sync, EntryKind.write, EntryKind.snapshot,
    EntryKind.deleteSnapshot, EntryKind.write
  ])
  t.same(all.filter(e => e.kind === EntryKind.write).map(e => [e.block, e.count]), [[0, 1], [1, 256], [257, 45], [100, 2], [200, 1], [0, 1]])
  t.ok(all.every((e, i) => i === 0 || e.position > all[i - 1].position), 'log positions grow')
  t.equal(all[3].seq, a.seq)
  t.match(all[3].payload, { name: 'a', id: a.id })
  t.match(all[5].payload, { note: 'mid', frozen: true })
  t.equal(all[5].seq, sync.seq)
  t.match(all[8].payload, { name: 'a', seq: a.seq })
  const ranged: number[] = []
  for await (const e of h.store.entries(3, 6)) ranged.push(e.seq)
  t.same(ranged, [3, 4, 5, 6], 'a range')

  // a is deleted: b's partition starts at the log's start.
  let listed = await ops.log(h.store, { snapshot: 'b' }, {}) as Array<{ seq: number }>
  t.same(listed.map(e => e.seq), all.filter(e => e.seq <= b.seq).map(e => e.seq), 'b\'s partition with a deleted')

  const c = await h.store.snapshot({ name: 'c' })
  await h.store.write(0, rng.bytes(B))
  listed = await ops.log(h.store, { snapshot: 'c' }, {}) as Array<{ seq: number }>
  t.same(listed.map(e => e.seq), Array.from({ length: c.seq - b.seq }, (_, i) => b.seq + 1 + i), 'c\'s partition: after b\'s cut, through c\'s')
  listed = await ops.log(h.store, {}, {}) as Array<{ seq: number }>
  t.equal(listed.length, c.seq + 1, 'the whole log without a snapshot')
  t.equal(await codeOf(() => ops.log(h.store, { snapshot: 'a' }, {})), 'NOT_FOUND', 'a deleted snapshot has no partition')
})

t.test('300 snapshots over MiBs of data all read correctly, before and after reopen', async t => {
  const SIZE = 32 * 1024 * 1024
  const BLOCKS = SIZE / B
  const h = await Harness.make(t, SIZE, 16 * 1024 * 1024)
  const rng = new Rng(300)
  // 16 MiB of data; block b's content is a function of (b, version) so expectations need no copies.
  const content = (block: number, version: number): Buffer => {
    const buf = Buffer.alloc(B)
    for (let i = 0; i < B; i += 8) { buf.writeUInt32LE(block, i); buf.writeUInt32LE(version, i + 4) }
    return buf
  }
  const chunk = Buffer.alloc(256 * B)
  for (let first = 0; first < BLOCKS / 2; first += 256) {
    for (let i = 0; i < 256; i++) content(first + i, 0).copy(chunk, i * B)
    await h.store.write(first * B, chunk)
  }
  // Snapshot i follows a write of block hot[i % hot.length] to version i+1.
  const hot = [0, 1, 2, 777, 4095, BLOCKS / 2 + 3, BLOCKS - 1]
  const sampled = [...hot, 3, 1000, BLOCKS / 2 - 2, BLOCKS / 2, BLOCKS - 2]
  const N = 300
  for (let i = 0; i < N; i++) {
    await h.store.write(hot[i % hot.length] * B, content(hot[i % hot.length], i + 1))
    if (i % 50 === 0) { // noise elsewhere
      let block = rng.int(BLOCKS)
      while (sampled.includes(block)) block = rng.int(BLOCKS)
      await h.store.write(block * B, rng.bytes(B))
    }
    await h.store.snapshot({ name: `snap-${i}` })
  }
  t.equal(h.store.snapshots().length, N)

  const expected = (block: number, snapIndex: number): Buffer => {
    const k = hot.indexOf(block)
    let version = -1
    if (k >= 0) for (let i = snapIndex; i >= 0; i--) if (i % hot.length === k) { version = i + 1; break }
    if (version === -1) return block < BLOCKS / 2 ? content(block, 0) : Buffer.alloc(B)
    return content(block, version)
  }
  const checkAll = async (every: number, when: string): Promise<void> => {
    let bad = 0
    let checked = 0
    for (let i = 0; i < N; i += every) {
      for (const block of sampled) {
        const got = await h.store.readSnapshot(`snap-${i}`, block * B, B)
        checked++
        if (!got.equals(expected(block, i))) {
          if (bad++ < 5) t.fail(`${when}: snap-${i} block ${block} differs`)
        }
      }
    }
    t.equal(bad, 0, `${when}: ${checked} sampled snapshot blocks read as expected`)
  }
  await checkAll(1, 'live')
  const list = h.store.snapshots()
  await h.reopen()
  t.same(h.store.snapshots(), list, 'all 300 snapshots survive reopen')
  await checkAll(1, 'after reopen')
  for (const block of sampled) {
    t.ok((await h.store.read(block * B, B)).equals(expected(block, N - 1)), `current block ${block}`)
  }
})
