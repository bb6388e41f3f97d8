// Replication against a real S3 engine (a Ceph object gateway the test starts itself, see
// test/helpers/ceph.ts), where S3 behaviour matters: conditional creation of manifests and
// lease records (atomic here), SigV4, and a gateway that goes away for a while and comes back
// with its objects. A store replicates while written, the lag grows while the gateway is down
// (writes go on, unshipped segments stay), the replica catches up, and a store recovered from
// the bucket alone is byte-identical; a second writer gets LEASE_HELD, takeover fences.
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
import { Replicator, cloneFromReplica, createFromReplica, newestManifest } from '../src/replicate'
import { releaseReplicaParent } from '../src/replicate/clone-replica'
import { deleteSnapshotRespectingClones } from '../src/clone/delete-guard'
import { parentOf, promote } from '../src/clone/clone'
import { cephMissing, startCeph, type CephGateway } from './helpers/ceph'

t.setTimeout(900_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB
const SEGMENT = 2 * MiB
const missing = cephMissing()

function pattern (seed: number, bytes: number): Buffer {
  const key = crypto.createHash('sha256').update(`replicate-ceph ${seed}`).digest()
  return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

function tmp (t: Test, name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-replceph-${name}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function sha (store: Store, snapshot?: string): Promise<string> {
  const h = crypto.createHash('sha256')
  for (let off = 0; off < store.sizeBytes; off += 4 * MiB) h.update(snapshot === undefined ? await store.read(off, 4 * MiB) : await store.readSnapshot(snapshot, off, 4 * MiB))
  return h.digest('hex')
}

async function until (what: string, cond: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function newStore (dir: string, spec: string): Promise<Store> {
  const config = await Store.create(dir, { sizeBytes: SIZE, segmentBytes: SEGMENT })
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  return (await openStore(dir, { checkpointIntervalMs: 100 })).store
}

t.test('replication to Ceph RGW', { skip: missing ?? false }, async t => {
  const g: CephGateway = await startCeph()
  t.teardown(g.stop)
  t.comment(`ceph: radosgw answering in ${g.startSeconds.toFixed(1)} s`)
  await g.createBucket('logdisk-repl')
  const target = (spec: string): ArchiveTarget => parseTarget(spec, {}, { s3: g.settings })

  await t.test('ships while written, rides out a gateway outage, recovers byte for byte', async t => {
    const spec = 's3://logdisk-repl/outage'
    const store = await newStore(path.join(tmp(t, 'a'), 'store'), spec)
    t.teardown(() => store.close())
    const tg = target(spec)
    t.teardown(() => tg.close())
    t.equal(await tg.exclusiveCreate(), 'atomic', 'Ceph creates manifests and lease records exclusively')
    const r = await Replicator.start(store, tg, { spec, intervalMs: 200, lagWarnMs: 1000 })
    t.teardown(() => r.stop())
    const lags: number[] = []
    for (let i = 0; i < 8; i++) {
      await store.write((i % 6) * 4 * MiB, pattern(i, 1 * MiB))
      await store.flush()
      const seq = store.status().index.seq
      const at = Date.now()
      await until('shipped', async () => (await r.status()).shippedSeq >= seq)
      lags.push((Date.now() - at) / 1000)
    }
    lags.sort((a, b) => a - b)
    t.comment(`ceph: lag after a flushed 1 MiB write (interval 200ms): p50 ${lags[4].toFixed(2)} s, max ${lags[7].toFixed(2)} s`)

    await g.stopGateway()
    let gatewayUp = false
    t.teardown(async () => { if (!gatewayUp) await g.startGateway().catch(() => undefined) })
    const writeStart = Date.now()
    await store.write(0, pattern(100, 6 * MiB))
    await store.flush()
    t.ok(Date.now() - writeStart < 20_000, 'writes go on while the gateway is down')
    await until('a lag warning', async () => { const s = await r.status(); return s.warnings.length > 0 && s.lastError !== null })
    const behind = await r.status()
    t.ok(behind.lagBytes >= 6 * MiB, `lag ${behind.lagBytes} bytes, ${behind.lagSeconds} s: ${behind.warnings[0]}`)
    await g.startGateway()
    gatewayUp = true
    const back = Date.now()
    await until('caught up after the outage', async () => { const s = await r.status(); return s.lagBytes === 0 && s.warnings.length === 0 }, 180_000)
    t.comment(`ceph: caught up ${((Date.now() - back) / 1000).toFixed(1)} s after the gateway came back`)
    const want = await sha(store)

    const other = path.join(tmp(t, 'b'), 'store')
    const rec = await createFromReplica(other, target(spec), { spec })
    t.comment(`ceph: create --from: ${rec.seconds.toFixed(2)} s for ${rec.bytes} bytes of log in ${rec.segments} segments`)
    const copy = (await openStore(other)).store
    t.teardown(() => copy.close())
    t.equal(await sha(copy), want, 'recovered from the bucket alone: byte-identical')
  })

  await t.test('one writer: LEASE_HELD naming the holder, takeover fences', async t => {
    const spec = 's3://logdisk-repl/lease'
    const a = await newStore(path.join(tmp(t, 'a'), 'store'), spec)
    t.teardown(() => a.close())
    const ra = await Replicator.start(a, target(spec), { spec, intervalMs: 200 })
    t.teardown(() => ra.stop())
    await a.write(0, pattern(200, 3 * MiB))
    await a.flush()
    await until('caught up', async () => (await ra.status()).lagBytes === 0)
    const dirB = path.join(tmp(t, 'b'), 'store')
    await createFromReplica(dirB, target(spec), { spec })
    writePolicy(dirB, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
    const b = (await openStore(dirB, { checkpointIntervalMs: 100 })).store
    t.teardown(() => b.close())
    let err: unknown
    try { await Replicator.start(b, target(spec), { spec }) } catch (e) { err = e }
    t.ok(isLogdiskError(err, 'LEASE_HELD'), 'LEASE_HELD')
    t.match((err as Error).message, /is held by .* \(pid \d+, store [0-9a-f-]+, generation 1\)/)
    const rb = await Replicator.start(b, target(spec), { spec, intervalMs: 200, takeover: true })
    t.teardown(() => rb.stop())
    await a.write(0, pattern(201, 1 * MiB))
    await a.flush()
    await until('A fenced', async () => (await ra.status()).state === 'fenced')
    await b.write(8 * MiB, pattern(202, 1 * MiB))
    await b.flush()
    await until('B caught up', async () => (await rb.status()).lagBytes === 0)
    const dirC = path.join(tmp(t, 'c'), 'store')
    await createFromReplica(dirC, target(spec), { spec })
    const c = (await openStore(dirC)).store
    t.teardown(() => c.close())
    t.equal(await sha(c), await sha(b), 'the bucket follows the new holder')
  })

  await t.test('a clone from the replica protects its snapshot on the writer; cold reads by range; promote releases it', async t => {
    const spec = 's3://logdisk-repl/clones'
    const store = await newStore(path.join(tmp(t, 'a'), 'store'), spec)
    t.teardown(() => store.close())
    const r = await Replicator.start(store, target(spec), { spec, intervalMs: 200, indexEverySegments: 2 })
    t.teardown(() => r.stop())
    await store.write(0, pattern(300, 8 * MiB))
    await store.snapshot({ name: 'golden' })
    await store.write(16 * MiB, pattern(301, 6 * MiB))
    await store.flush()
    await until('caught up with an index checkpoint', async () => {
      const s = await r.status()
      return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq && !!(await newestManifest(target(spec)))?.manifest.index
    })
    const golden = await sha(store, 'golden')
    const cloneDir = path.join(tmp(t, 'host2'), 'c')
    const made = await cloneFromReplica(target(spec), spec, 'golden', cloneDir)
    t.equal(made.recovered.mode, 'lazy')
    let err: unknown
    try { await deleteSnapshotRespectingClones(store, 'golden', { targetFor: target }) } catch (e) { err = e }
    t.ok(isLogdiskError(err, 'BUSY'), 'the writer refuses to delete the snapshot')
    t.match((err as Error).message, new RegExp(`base of clone made from the replica ${spec} .*:${cloneDir} \\(${made.dependency}\\)`))
    const clone = (await openStore(cloneDir)).store
    try {
      const started = Date.now()
      const cold = await clone.read(4096, 4096)
      t.comment(`ceph: first read of a cold block through the clone: ${Date.now() - started} ms (by range)`)
      t.ok(cold.equals(await store.readSnapshot('golden', 4096, 4096)), 'the cold block')
      t.equal(await sha(clone), golden, 'the clone reads the snapshot byte for byte')
      await promote(clone, parentOf(clone)!.record, parentOf(clone)!.parent)
    } finally {
      await clone.close()
    }
    const released = await releaseReplicaParent(cloneDir, target)
    t.equal(released.warning, undefined)
    t.notOk(fs.existsSync(made.parent), 'the hidden parent is gone')
    const alone = (await openStore(cloneDir)).store
    try { t.equal(await sha(alone), golden, 'promoted: the same image') } finally { await alone.close() }
    await deleteSnapshotRespectingClones(store, 'golden', { targetFor: target })
    t.same(store.snapshots(), [], 'then the writer deletes it')
  })
})
