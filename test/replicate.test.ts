// Continuous replication and recovery at the library level (issue 14 items 1-3), against a
// directory and s3rver (speed: the behaviour under test is the replicator's, not S3's; the
// Ceph run is in replicate-ceph.test.ts): a store replicates while it is written, a store
// rebuilt from the replica alone reads byte for byte like the original at its shipped point
// (current image, snapshots, --at), an unreachable target only raises the lag (passes leave
// unshipped segments alone) and catches up, the lease keeps one writer, takeover fences.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseTarget, type ArchiveTarget } from '../src/archive'
import { isLogdiskError } from '../src/errors'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { openStore } from '../src/app/open'
import { Store } from '../src/store'
import { recordIdentity } from '../src/store/identity'
import { Replicator, createFromReplica, newestManifest } from '../src/replicate'
import { startS3Server } from './helpers/s3-server'
import { imageSha, labelledPattern, testTmp } from './helpers/replica-fixture'

t.setTimeout(600_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB
const SEGMENT = 2 * MiB

const pattern = (seed: number, bytes: number): Buffer => labelledPattern('replicate', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'repl', name)
const sha = imageSha

async function newStore (dir: string, policy: string[] = []): Promise<Store> {
  const config = await Store.create(dir, { sizeBytes: SIZE, segmentBytes: SEGMENT })
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), policy))
  return (await openStore(dir, { checkpointIntervalMs: 100 })).store
}

async function until (what: string, cond: () => Promise<boolean> | boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

interface Backend { name: string, spec: (t: Test) => string, target: (spec: string) => ArchiveTarget, breakIt?: (spec: string) => void, fix?: (spec: string) => void }

const dirBackend: Backend = {
  name: 'directory',
  spec: t => { const d = path.join(tmp(t, 'target'), 'replica'); fs.mkdirSync(d); return d },
  target: spec => parseTarget(spec),
  // A directory that is gone: every operation fails with IO.
  breakIt: spec => fs.renameSync(spec, `${spec}.away`),
  fix: spec => fs.renameSync(`${spec}.away`, spec)
}

const S3 = startS3Server('logdisk-repl')
S3.catch(() => undefined)
t.teardown(async () => { await (await S3).stop() })
let prefixes = 0
const s3Backend: Backend = {
  name: 's3rver',
  spec: () => `s3://logdisk-repl/r${++prefixes}`,
  target: spec => { throw new Error(`use target() of ${spec} after S3 started`) }
}

async function backendTarget (b: Backend, spec: string): Promise<ArchiveTarget> {
  if (b.name !== 's3rver') return b.target(spec)
  const s = await S3
  return parseTarget(spec, {}, { s3: s.settings, settleMs: 300 })
}

for (const b of [dirBackend, s3Backend]) {
  t.test(`${b.name}: replicate while writing, recover on "another host", byte for byte`, async t => {
    const spec = b.spec(t)
    const dir = path.join(tmp(t, 'a'), 'store')
    const store = await newStore(dir, [`replicate.target=${spec}`])
    t.teardown(() => store.close())
    const target = await backendTarget(b, spec)
    t.teardown(() => target.close())
    const r = await Replicator.start(store, target, { spec, intervalMs: 100 })
    t.teardown(() => r.stop())
    // Several segments' worth, a snapshot, a sync point, then overwrites.
    await store.write(0, pattern(1, 6 * MiB))
    await store.snapshot({ name: 's1' })
    await store.write(3 * MiB, pattern(2, 3 * MiB))
    const syncPoint = await store.syncPoint('after-2')
    await store.write(1 * MiB + 512, pattern(3, 100_000)) // unaligned
    await store.flush()
    const lags: number[] = []
    await until('the replica to catch up', async () => {
      const s = await r.status()
      lags.push(s.lagSeconds)
      return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq
    })
    const st = await r.status()
    t.equal(st.state, 'caught-up')
    t.ok(st.generation! >= 1, 'shipped under a lease generation')
    t.comment(`${b.name}: ${st.objectsPut} objects, ${st.shippedBytes} log bytes; worst lag seen ${Math.max(...lags).toFixed(2)} s`)
    const want = await sha(store)
    const wantS1 = await sha(store, 's1')

    // "Another host": only the replica.
    const other = path.join(tmp(t, 'b'), 'store')
    const started = Date.now()
    const rec = await createFromReplica(other, await backendTarget(b, spec), { spec })
    t.comment(`${b.name}: create --from took ${((Date.now() - started) / 1000).toFixed(2)} s for ${rec.bytes} bytes of log`)
    t.equal(rec.seq, store.status().index.seq, 'the recovered log ends where the original does')
    const copy = (await openStore(other)).store
    try {
      t.equal(await sha(copy), want, 'current.img is byte-identical')
      t.equal(await sha(copy, 's1'), wantS1, 'snapshot s1 too')
      t.same(copy.snapshots().map(s => s.name), ['s1'])
      t.equal(copy.config.uuid, store.config.uuid)
    } finally {
      await copy.close()
    }

    // --at: the sync point, and the snapshot.
    for (const at of [String(syncPoint.seq), 's1']) {
      const d = path.join(tmp(t, 'at'), 'store')
      const rr = await createFromReplica(d, await backendTarget(b, spec), { spec, at })
      const c = (await openStore(d)).store
      try {
        t.equal(rr.seq, at === 's1' ? store.snapshotNamed('s1').seq : syncPoint.seq, `--at ${at} cuts the log there`)
        const h = crypto.createHash('sha256')
        const img = Buffer.alloc(SIZE)
        for await (const { block, data } of store.imageAt(rr.seq)) data.copy(img, block * store.blockBytes)
        h.update(img)
        t.equal(await sha(c), h.digest('hex'), `--at ${at}: the image as the original had it there`)
      } finally {
        await c.close()
      }
    }
  })
}

t.test('an unreachable target raises the lag, passes leave unshipped segments alone, and it catches up', async t => {
  const spec = dirBackend.spec(t)
  const dir = path.join(tmp(t, 'a'), 'store')
  const store = await newStore(dir, [`replicate.target=${spec}`, 'history.keep=0'])
  t.teardown(() => store.close())
  const r = await Replicator.start(store, parseTarget(spec), { spec, intervalMs: 100, lagWarnMs: 300 })
  t.teardown(() => r.stop())
  await store.write(0, pattern(10, 5 * MiB))
  await store.flush()
  await until('caught up', async () => (await r.status()).lagBytes === 0)
  const atBreak = new Set(store.logSegments().map(s => s.id))
  dirBackend.breakIt!(spec)
  // Overwrite everything twice: the segments of the first overwrite die, compaction would recycle them.
  await store.write(0, pattern(11, 5 * MiB))
  await store.write(0, pattern(12, 5 * MiB))
  await store.flush()
  await until('a lag warning and the error', async () => { const s = await r.status(); return s.warnings.length > 0 && s.lastError !== null }, 30_000)
  const behind = await r.status()
  t.ok(behind.lagBytes > 4 * MiB, `lag in bytes (${behind.lagBytes})`)
  t.ok(behind.lagSeconds > 0.3, `lag in seconds (${behind.lagSeconds})`)
  t.match(behind.warnings[0], /is \d+(\.\d)? s \(\d+(\.\d)? (B|KiB|MiB|GiB|TiB)\) behind/)
  t.ok(behind.lastError, `the error is kept: ${behind.lastError}`)
  const unshipped = store.logSegments().filter(s => !atBreak.has(s.id) && s.state !== 'current').map(s => s.id)
  t.ok(unshipped.length >= 3, `segments sealed while unreachable: ${unshipped.join(',')}`)
  const report = await store.compact({ cleanBelow: 0.9 })
  t.comment(`compaction while unreachable: ${JSON.stringify(report)}`)
  const left = new Set(store.logSegments().map(s => s.id))
  t.ok(unshipped.every(id => left.has(id)), 'every segment not on the replica is still there')
  dirBackend.fix!(spec)
  await until('caught up again', async () => { const s = await r.status(); return s.lagBytes === 0 && s.warnings.length === 0 })
  const want = await sha(store)
  const other = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(other, parseTarget(spec), { spec })
  const copy = (await openStore(other)).store
  t.teardown(() => copy.close())
  t.equal(await sha(copy), want, 'the replica has everything after it came back')
  // Now the shipped segments may go.
  const after = await store.compact({ cleanBelow: 0.9 })
  t.ok(after.segmentsRecycled + after.versionsFreed > 0, 'compaction frees what is on the replica')
})

t.test('one writer: a second replicator gets LEASE_HELD naming the holder; takeover fences the first', async t => {
  const spec = dirBackend.spec(t)
  const dirA = path.join(tmp(t, 'a'), 'store')
  const a = await newStore(dirA, [`replicate.target=${spec}`])
  t.teardown(() => a.close())
  const ra = await Replicator.start(a, parseTarget(spec), { spec, intervalMs: 100 })
  t.teardown(() => ra.stop())
  await a.write(0, pattern(20, 3 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)

  // Host B recovers from the replica and wants to continue it.
  const dirB = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(dirB, parseTarget(spec), { spec })
  writePolicy(dirB, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  const b = (await openStore(dirB, { checkpointIntervalMs: 100 })).store
  t.teardown(() => b.close())
  let err: unknown
  try { await Replicator.start(b, parseTarget(spec), { spec, intervalMs: 100 }) } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'LEASE_HELD'), 'LEASE_HELD')
  t.match((err as Error).message, new RegExp(`the lease is held by ${os.hostname()} \\(pid ${process.pid}`), 'naming the holder')
  t.notOk((err as Error).message.includes('\n'), 'one line')

  const rb = await Replicator.start(b, parseTarget(spec), { spec, intervalMs: 100, takeover: true })
  t.teardown(() => rb.stop())
  t.equal((await rb.status()).generation, (await ra.status()).generation! + 1, 'a new generation')
  // A keeps writing: its replicator is fenced at its next put; its writes go on locally.
  await a.write(0, pattern(21, 1 * MiB))
  await a.flush()
  await until('A fenced', async () => (await ra.status()).state === 'fenced')
  t.match((await ra.status()).warnings[0], /taken over|fenced/)
  await b.write(4 * MiB, pattern(22, 1 * MiB))
  await b.flush()
  await until('B caught up', async () => (await rb.status()).lagBytes === 0)
  const newest = await newestManifest(parseTarget(spec))
  t.equal(newest!.manifest.generation, (await rb.status()).generation, 'the newest manifest is the new holder\'s')
  const dirC = path.join(tmp(t, 'c'), 'store')
  await createFromReplica(dirC, parseTarget(spec), { spec })
  const c = (await openStore(dirC)).store
  t.teardown(() => c.close())
  t.equal(await sha(c), await sha(b), 'the replica holds B\'s history, not A\'s late writes')
})

t.test('a replica of another history is refused; a restart continues the chain', async t => {
  const spec = dirBackend.spec(t)
  const dirA = path.join(tmp(t, 'a'), 'store')
  const a = await newStore(dirA, [`replicate.target=${spec}`])
  t.teardown(() => a.close())
  let ra = await Replicator.start(a, parseTarget(spec), { spec, intervalMs: 100 })
  await a.write(0, pattern(30, 3 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)
  const dirB = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(dirB, parseTarget(spec), { spec })
  // A goes on (and releases the lease on a clean stop); B wrote something else meanwhile.
  await a.write(0, pattern(31, 1 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)
  const gen = (await ra.status()).generation!
  await ra.stop({ final: true })
  const b = (await openStore(dirB)).store
  t.teardown(() => b.close())
  await b.write(0, pattern(32, 1 * MiB))
  await b.flush()
  let err: unknown
  try { await Replicator.start(b, parseTarget(spec), { spec, intervalMs: 100 }) } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'BAD_ARGUMENT'), 'refused')
  t.match((err as Error).message, /holds a history this store does not have/)
  // A restarts: same history, next generation, continues.
  ra = await Replicator.start(a, parseTarget(spec), { spec, intervalMs: 100 })
  t.teardown(() => ra.stop())
  t.ok((await ra.status()).generation! > gen, 'a later generation')
  await a.write(2 * MiB, pattern(33, 1 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)
  const dirC = path.join(tmp(t, 'c'), 'store')
  await createFromReplica(dirC, parseTarget(spec), { spec })
  const c = (await openStore(dirC)).store
  t.teardown(() => c.close())
  t.equal(await sha(c), await sha(a))
})

t.test('a damaged newest manifest: recovery refuses to go back in time without a word; a writer ships again from the one before', async t => {
  // create --from skipped a damaged newest manifest for the one before it and exited 0, the
  // store lacking what the newest one committed (acknowledged writes; helper-60's D1).
  const spec = dirBackend.spec(t)
  const dirA = path.join(tmp(t, 'a'), 'store')
  const a = await newStore(dirA, [`replicate.target=${spec}`])
  t.teardown(() => a.close())
  let ra = await Replicator.start(a, parseTarget(spec), { spec, intervalMs: 100 })
  await a.write(0, pattern(40, 3 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)
  await a.write(0, pattern(41, 1 * MiB))
  await a.flush()
  await until('caught up', async () => (await ra.status()).lagBytes === 0)
  await ra.stop({ final: true })
  const newest = (await newestManifest(parseTarget(spec)))!
  const file = path.join(spec, newest.name)
  const bytes = fs.readFileSync(file)
  bytes[Math.floor(bytes.length / 2)] ^= 1
  fs.writeFileSync(file, bytes)

  const dirB = path.join(tmp(t, 'b'), 'store')
  let err: unknown
  try { await createFromReplica(dirB, parseTarget(spec), { spec }) } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'CORRUPT'), 'refused (CORRUPT)')
  t.match((err as Error).message, new RegExp(`^the newest manifest of ${spec}, ${newest.name}, is damaged \\(.*not a replica manifest.*\\); nothing was created\\. An older manifest may still recover an earlier point: give --skip-damaged-manifest`), 'naming it and the way on')
  t.notOk(fs.existsSync(dirB), 'nothing was created')
  const warned: string[] = []
  const older = await createFromReplica(dirB, parseTarget(spec), { spec, skipDamagedManifest: true, log: { info () {}, warn (_f: object, m: string) { warned.push(m) }, error () {} } })
  t.not(older.manifest, newest.name, `with --skip-damaged-manifest: recovered from ${older.manifest}`)
  t.match(warned.join('\n'), new RegExp(`^skipped the damaged manifest ${newest.name} of the replica`), 'and said so')
  t.equal(warned.length, 1, 'once')

  // The writer has every byte: it starts from the manifest before and ships again.
  ra = await Replicator.start(a, parseTarget(spec), { spec, intervalMs: 100, indexEverySegments: 1 })
  t.teardown(() => ra.stop())
  await a.write(4 * MiB, pattern(42, 3 * MiB))
  await a.flush()
  await until('caught up, with an index checkpoint', async () => (await ra.status()).lagBytes === 0 && !!(await newestManifest(parseTarget(spec)))?.manifest.index)
  const dirC = path.join(tmp(t, 'c'), 'store')
  await createFromReplica(dirC, parseTarget(spec), { spec })
  const c = (await openStore(dirC)).store
  t.teardown(() => c.close())
  t.equal(await sha(c), await sha(a), 'a recovery after the writer shipped again has every byte')

  // A damaged index checkpoint is named with its replica and object, as a segment object is,
  // and costs only the lazy start: the whole log is fetched instead (helper-60, helper-63).
  const last = (await newestManifest(parseTarget(spec)))!
  t.ok(last.manifest.index, 'the newest manifest names an index checkpoint')
  const idx = path.join(spec, last.manifest.index!.name)
  const raw = fs.readFileSync(idx)
  raw[raw.length - 5] ^= 1
  fs.writeFileSync(idx, raw)
  const said: string[] = []
  const dirD = path.join(tmp(t, 'd'), 'store')
  const full = await createFromReplica(dirD, parseTarget(spec), { spec, log: { info () {}, warn (_f: object, m: string) { said.push(m) }, error () {} } })
  t.equal(full.mode, 'full', 'recovered by fetching the whole log')
  t.match(said.join('\n'), `the index checkpoint the replica's manifest names is damaged (${spec}: ${last.manifest.index!.name}: archive:`, 'saying so, naming the replica and the object')
  const d = (await openStore(dirD)).store
  t.teardown(() => d.close())
  t.equal(await sha(d), await sha(a), 'every byte')
})

t.test('a slowly filling segment: its parts are consolidated, the manifest stays short', async t => {
  const spec = dirBackend.spec(t)
  const store = await newStore(path.join(tmp(t, 'a'), 'store'), [`replicate.target=${spec}`])
  t.teardown(() => store.close())
  const r = await Replicator.start(store, parseTarget(spec), { spec, timer: false })
  t.teardown(() => r.stop())
  let most = 0
  for (let i = 0; i < 70; i++) {
    await store.write(i * 8192, pattern(40 + i, 4096))
    await store.flush()
    await r.tick()
    const m = (await newestManifest(parseTarget(spec)))!.manifest
    for (const parts of Object.values(m.tails)) most = Math.max(most, parts.length)
  }
  t.ok(most <= 32, `at most 32 parts per segment (saw ${most})`)
  const other = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(other, parseTarget(spec), { spec })
  const copy = (await openStore(other)).store
  t.teardown(() => copy.close())
  t.equal(await sha(copy), await sha(store), 'recovered from consolidated parts, byte for byte')
})
