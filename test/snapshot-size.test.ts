// A snapshot keeps the size the volume had at its cut, and a point in time restores at the
// size the volume had then (helper-86 D4: after the documented shrink, filesystem first, a
// snapshot taken before it was cut to the new size and its ext4 no longer mounted, "bad
// geometry"; so was a restore of a point before the shrink). Store level (no FUSE): the
// snapshot's image through the folder the mount serves, readSnapshot, export, restore, clone;
// after a reopen and after an index rebuild from the log; and a store of an older format,
// whose snapshot markers have no size, keeps taking the current size.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { LogdiskError } from '../src/errors'
import { exportSnapshot } from '../src/copy/export'
import { restoreImage } from '../src/copy/restore'
import { ImageFolder } from '../src/fuse/image-ops'
import { EntryKind } from '../src/store/format'
import { silentLogger } from '../src/store/logger'
import { Store, type OpenOptions } from '../src/store/store'
import { Rng } from '../src/testing/rng'
import { parseTarget } from '../src/archive'
import { openStore } from '../src/app/open'
import { Replicator, createFromReplica } from '../src/replicate'
import { logdisk } from './helpers/cli'
import { newReplicatedStore } from './helpers/replica-fixture'
import { FIXTURES } from './helpers/paths'

const B = 4096
const KiB = 1024
const MiB = 1024 * KiB
const SEGMENT = 1114112
const OPEN: OpenOptions = { checkpointIntervalMs: 0 }

function tmp (t: Test, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function codeOf (fn: () => unknown): Promise<string | undefined> {
  try {
    await fn()
  } catch (err) {
    return err instanceof LogdiskError ? err.code : `not a LogdiskError: ${String(err)}`
  }
  return undefined
}

/** What the folder a mount serves says of an image: its size, and what a read at `pos` returns. */
async function throughFolder (store: Store, image: string, pos: number, length: number): Promise<{ size: number, data: Buffer }> {
  const folder = new ImageFolder(store, silentLogger, { readOnly: true })
  const size = folder.attr(image).size
  const h = folder.open(image, fs.constants.O_RDONLY)
  try {
    const into = Buffer.alloc(length)
    const n = await folder.read(h, pos, into)
    return { size, data: into.subarray(0, n) }
  } finally {
    folder.release(h)
  }
}

t.test('a snapshot and a point before a shrink keep the size the volume had then: images, reads, restore, export; after reopen and rebuild', async t => {
  const dir = tmp(t, 'snapsize')
  const storeDir = path.join(dir, 'store')
  await Store.create(storeDir, { sizeBytes: 4 * MiB, blockBytes: B, segmentBytes: SEGMENT })
  let store = await Store.open(storeDir, OPEN)
  t.teardown(() => store.close().catch(() => undefined))
  const rng = new Rng(0x51e)
  const model = Buffer.alloc(4 * MiB)
  for (let off = 0; off < 1536 * KiB; off += 256 * KiB) {
    const data = rng.bytes(256 * KiB)
    await store.write(off, data)
    data.copy(model, off)
  }
  const s1 = await store.snapshot({ name: 's1' })
  t.equal(s1.sizeBytes, 4 * MiB, 'the snapshot records the size at its cut')
  const before = await store.syncPoint('before-shrink')

  // The documented shrink: nothing of the volume (or a snapshot, or the history) past the new end.
  t.same(await store.resize(2 * MiB), { fromBytes: 4 * MiB, toBytes: 2 * MiB })
  const resizeMarkers = []
  for await (const e of store.entries()) if (e.kind === EntryKind.sync && e.payload?.resize !== undefined) resizeMarkers.push(e)
  t.equal(resizeMarkers.length, 1, 'the resize is a sync marker in the log')
  t.same(resizeMarkers[0]?.payload?.resize, { fromBytes: 4 * MiB, toBytes: 2 * MiB }, 'with the old and the new size')
  const afterShrink = await store.syncPoint('after-shrink')
  const atShrink = Buffer.from(model.subarray(0, 2 * MiB))
  const more = rng.bytes(64 * KiB)
  await store.write(1900 * KiB, more)
  const s2 = await store.snapshot({ name: 's2' })
  t.equal(s2.sizeBytes, 2 * MiB, 'a snapshot after the shrink records the new size')
  const atS2 = Buffer.from(atShrink)
  more.copy(atS2, 1900 * KiB)

  const check = async (when: string): Promise<void> => {
    t.equal(store.sizeBytes, 2 * MiB, `${when}: the volume is 2 MiB`)
    t.equal(store.snapshotSize(store.snapshotNamed('s1')), 4 * MiB, `${when}: s1 keeps 4 MiB`)
    t.equal(store.snapshotSize(store.snapshotNamed('s2')), 2 * MiB, `${when}: s2 is 2 MiB`)
    const whole = await store.readSnapshot('s1', 0, 4 * MiB)
    t.equal(whole.length, 4 * MiB, `${when}: readSnapshot of s1 reads 4 MiB`)
    t.ok(whole.equals(model), `${when}: s1 reads as it was`)
    const tail = await store.readSnapshot('s1', 3 * MiB, 2 * MiB)
    t.equal(tail.length, MiB, `${when}: its tail past the new end reads up to its own end`)
    t.ok(tail.equals(Buffer.alloc(MiB)), `${when}: as zeros (nothing was there)`)
    t.equal((await store.readSnapshot('s2', 0, 4 * MiB)).length, 2 * MiB, `${when}: s2 ends at 2 MiB`)
    const img = await throughFolder(store, 's1.img', 3 * MiB, 2 * MiB)
    t.equal(img.size, 4 * MiB, `${when}: s1.img is 4 MiB`)
    t.equal(img.data.length, MiB, `${when}: a read of s1.img past the new end returns its bytes`)
    t.equal((await throughFolder(store, 's2.img', 0, B)).size, 2 * MiB, `${when}: s2.img is 2 MiB`)
    t.equal((await throughFolder(store, 'current.img', 0, B)).size, 2 * MiB, `${when}: current.img is 2 MiB`)
    t.equal(store.sizeAt(before.seq), 4 * MiB, `${when}: sizeAt a point before the shrink`)
    t.equal(store.sizeAt(afterShrink.seq), 2 * MiB, `${when}: sizeAt a point after it`)
    t.equal(store.sizeAt(s1.seq), 4 * MiB, `${when}: sizeAt s1's cut`)

    const out = path.join(dir, `restore-${when.replace(/\W+/g, '-')}.img`)
    await restoreImage(store, (await store.resolvePoint('before-shrink')).seq, out)
    t.equal(fs.statSync(out).size, 4 * MiB, `${when}: restore --at before-shrink has the size the volume had then`)
    t.ok(fs.readFileSync(out).equals(model), `${when}: and its content`)
    const out2 = path.join(dir, `restore2-${when.replace(/\W+/g, '-')}.img`)
    await restoreImage(store, afterShrink.seq, out2)
    t.equal(fs.statSync(out2).size, 2 * MiB, `${when}: restore of a point after the shrink has the new size`)
    t.ok(fs.readFileSync(out2).equals(atShrink), `${when}: and its content`)
    const exp = path.join(dir, `export-${when.replace(/\W+/g, '-')}.img`)
    const r = await exportSnapshot(store, 's1', exp)
    t.equal(r.sizeBytes, 4 * MiB, `${when}: export of s1 says 4 MiB`)
    t.ok(fs.readFileSync(exp).equals(model), `${when}: and holds s1 whole`)
    const exp2 = path.join(dir, `export2-${when.replace(/\W+/g, '-')}.img`)
    await exportSnapshot(store, 's2', exp2)
    t.ok(fs.readFileSync(exp2).equals(atS2), `${when}: export of s2 is 2 MiB of s2`)
  }
  await check('live')
  await store.close()
  store = await Store.open(storeDir, OPEN)
  await check('reopened')
  await store.close()
  fs.rmSync(path.join(storeDir, 'index'), { recursive: true, force: true })
  store = await Store.open(storeDir, OPEN)
  t.ok(store.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  await check('rebuilt')

  await store.close()
  // The commands: restore, export, clone and send through the CLI (ops).
  const cli = await logdisk('restore', storeDir, '--at', 'before-shrink', '--out', path.join(dir, 'cli-restore.img'))
  t.equal(cli.code, 0, cli.stderr)
  t.equal(fs.statSync(path.join(dir, 'cli-restore.img')).size, 4 * MiB, 'logdisk restore --at before-shrink: 4 MiB')
  const ex = await logdisk('export', storeDir, 's1', '--out', path.join(dir, 'cli-export.img'))
  t.equal(ex.code, 0, ex.stderr)
  t.equal(fs.statSync(path.join(dir, 'cli-export.img')).size, 4 * MiB, 'logdisk export s1: 4 MiB')
  const cl = await logdisk('clone', storeDir, 's1', path.join(dir, 'clone'))
  t.equal(cl.code, 0, cl.stderr)
  const st = await logdisk('status', path.join(dir, 'clone'), '--json')
  t.equal(JSON.parse(st.stdout).sizeBytes, 4 * MiB, 'a clone of s1 has s1\'s size')
  // A stream carries the current size: s1 is refused rather than sent cut; s2 goes.
  const sent = await logdisk('send', storeDir, 's1', '--out', path.join(dir, 's1.stream'))
  t.equal(sent.code, 1, 'send of a snapshot taken before a shrink is refused')
  t.match(sent.stderr, /snapshot s1 is of the 4\.0 MiB \(4194304 bytes\) volume it was taken of, and .* was shrunk to 2\.0 MiB/)
  t.notOk(fs.existsSync(path.join(dir, 's1.stream')), 'nothing written')
  const sent2 = await logdisk('send', storeDir, 's2', '--out', path.join(dir, 's2.stream'))
  t.equal(sent2.code, 0, sent2.stderr)
  store = await Store.open(storeDir, OPEN)
  // A grow afterwards: the snapshots keep theirs, the points in between the shrunk size.
  await store.resize(6 * MiB)
  t.equal(store.snapshotSize(store.snapshotNamed('s1')), 4 * MiB, 'after a grow s1 is still 4 MiB')
  t.equal(store.snapshotSize(store.snapshotNamed('s2')), 2 * MiB, 'and s2 2 MiB')
  t.equal(store.sizeAt(afterShrink.seq), 2 * MiB, 'a point between the shrink and the grow had 2 MiB')
  t.equal(store.sizeAt(before.seq), 4 * MiB, 'one before the shrink 4 MiB')
  t.equal(store.sizeAt(store.status().index.seq), 6 * MiB, 'the newest point the current size')
  t.equal((await store.readSnapshot('s2', 0, 6 * MiB)).length, 2 * MiB, 's2 reads 2 MiB')
})

t.test('a shrink is still refused while a snapshot holds data past the new end; the snapshot keeps it', async t => {
  const dir = tmp(t, 'snapsize-refused')
  const storeDir = path.join(dir, 'store')
  await Store.create(storeDir, { sizeBytes: 4 * MiB, blockBytes: B, segmentBytes: SEGMENT })
  const store = await Store.open(storeDir, OPEN)
  t.teardown(() => store.close().catch(() => undefined))
  const data = Buffer.alloc(B, 7)
  await store.write(3 * MiB, data)
  await store.snapshot({ name: 's' })
  await store.discard(3 * MiB, B)
  t.equal(await codeOf(() => store.resize(2 * MiB)), 'BAD_ARGUMENT', 'refused: s holds block 768')
  t.equal(store.sizeBytes, 4 * MiB, 'nothing changed')
  await store.compact({})
  t.equal(await codeOf(() => store.resize(2 * MiB)), 'BAD_ARGUMENT', 'still refused after a compaction (it kept s\'s version)')
  t.ok((await store.readSnapshot('s', 3 * MiB, B)).equals(data), 's still reads it')
  let markers = 0
  for await (const e of store.entries()) if (e.kind === EntryKind.sync) markers++
  t.equal(markers, 0, 'a refused resize logs nothing')
})

t.test('a store of an older format (snapshot markers without a size) opens; its snapshots take the current size', async t => {
  const fixture = path.join(FIXTURES, 'format-4')
  const manifest = JSON.parse(fs.readFileSync(path.join(fixture, 'manifest.json'), 'utf8'))
  const dir = tmp(t, 'snapsize-compat')
  fs.cpSync(fixture, dir, { recursive: true })
  const size = manifest.sizeBytes as number
  let store = await Store.open(dir, OPEN)
  t.teardown(() => store.close().catch(() => undefined))
  const names = manifest.snapshots.map((s: { name: string }) => s.name) as string[]
  for (const name of names) {
    t.equal(store.snapshotNamed(name).sizeBytes, undefined, `${name}: its marker records no size`)
    t.equal(store.snapshotSize(store.snapshotNamed(name)), size, `${name}: the current size`)
    t.equal((await throughFolder(store, `${name}.img`, 0, B)).size, size, `${name}.img: the current size`)
  }
  const first = await store.readSnapshot(names[0], 0, size)
  // Grown: the old snapshots grow with the volume, as they always did.
  await store.resize(2 * size)
  const grewAt = store.status().index.seq // the grow's marker
  for (const name of names) t.equal(store.snapshotSize(store.snapshotNamed(name)), 2 * size, `${name}: grown with the volume`)
  const grown = await store.readSnapshot(names[0], 0, 2 * size)
  t.equal(grown.length, 2 * size, 'reads the grown size')
  t.ok(grown.subarray(0, size).equals(first) && grown.subarray(size).equals(Buffer.alloc(size)), 'its data, then zeros')
  const after = await store.snapshot({ name: 'after-grow' })
  t.equal(after.sizeBytes, 2 * size, 'a new snapshot records its size')
  await store.resize(size)
  t.equal(store.snapshotSize(store.snapshotNamed('after-grow')), 2 * size, 'and keeps it through a shrink')
  t.equal(store.snapshotSize(store.snapshotNamed(names[0])), size, 'the old ones take the current size')
  await store.close()
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })
  store = await Store.open(dir, OPEN)
  t.equal(store.snapshotSize(store.snapshotNamed('after-grow')), 2 * size, 'rebuilt: the new snapshot keeps its size')
  t.equal(store.snapshotSize(store.snapshotNamed(names[0])), size, 'rebuilt: the old ones the current size')
  t.equal(store.sizeAt(grewAt), 2 * size, 'rebuilt: a point between the grow and the shrink had the grown size')
  t.ok((await store.readSnapshot(names[0], 0, size)).equals(first), 'the old snapshot reads as it did')
})

t.test('create --from a replica --at a point before a shrink makes a store of the size it had then', async t => {
  const dir = tmp(t, 'snapsize-replica')
  const spec = path.join(dir, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(dir, 'a'), spec, { sizeBytes: 4 * MiB, segmentBytes: SEGMENT })
  t.teardown(() => store.close().catch(() => undefined))
  const r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000 })
  t.teardown(() => r.stop())
  const data = new Rng(7).bytes(512 * KiB)
  await store.write(0, data)
  await store.syncPoint('before-shrink')
  await store.resize(2 * MiB)
  await store.write(1536 * KiB, data.subarray(0, 256 * KiB))
  await store.snapshot({ name: 'small' })
  await store.flush()
  for (let i = 0; i < 20; i++) {
    await r.tick()
    const st = await r.status()
    if (st.lagBytes === 0 && st.shippedSeq === store.status().index.seq) break
  }
  const check = async (at: string | undefined, want: number, what: string): Promise<void> => {
    const to = path.join(dir, `b-${at ?? 'now'}`)
    await createFromReplica(to, parseTarget(spec), { spec, ...(at !== undefined ? { at } : {}) })
    const b = (await openStore(to, {}, [], 'read')).store
    try {
      t.equal(b.sizeBytes, want, what)
      t.ok((await b.read(0, 512 * KiB)).equals(data), `${what}: the data`)
    } finally {
      await b.close()
    }
  }
  await check('before-shrink', 4 * MiB, 'create --from --at before-shrink: 4 MiB')
  await check('small', 2 * MiB, 'create --from --at small (after the shrink): 2 MiB')
  await check(undefined, 2 * MiB, 'create --from: the current 2 MiB')
})
