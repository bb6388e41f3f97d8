// A replica that goes back in time under its writer, and a takeover that is refused: found by
// a hostile test (helper-41). Before: (a) a replica directory put back from an older copy
// while the store replicated went unnoticed: the writer renewed the lease on it and published
// manifests naming segments only the replaced directory had, status said caught-up, and a
// store made from the replica failed its reads; (b) `--takeover` refused for a diverged
// history first took the lease, so the rightful writer was fenced and shipped no more.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { Lease, parseTarget, type ArchiveTarget } from '../src/archive'
import { isLogdiskError } from '../src/errors'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { openStore } from '../src/app/open'
import { Store } from '../src/store'
import { recordIdentity } from '../src/store/identity'
import { Replicator, createFromReplica, newestManifest } from '../src/replicate'
import { imageSha, labelledPattern, testTmp } from './helpers/replica-fixture'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const pattern = (seed: number, bytes: number): Buffer => labelledPattern('rollback', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'rollback', name)

async function newStore (dir: string, spec: string): Promise<Store> {
  const config = await Store.create(dir, { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB })
  recordIdentity(dir, config)
  writePolicy(dir, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  return (await openStore(dir, { checkpointIntervalMs: 100 })).store
}

function replicaDir (t: Test): string {
  const d = path.join(tmp(t, 'target'), 'replica')
  fs.mkdirSync(d)
  return d
}

/** Replaces the replica directory with an older copy of it, as a restore from a backup does. */
function putBack (copy: string, spec: string): void {
  fs.rmSync(spec, { recursive: true })
  fs.cpSync(copy, spec, { recursive: true })
}

/** Every object the replica's newest manifest names is there. */
async function manifestWhole (target: ArchiveTarget): Promise<{ name: string, missing: string[] }> {
  const m = await newestManifest(target)
  if (!m) throw new Error('no manifest')
  const names = [...Object.values(m.manifest.segments), ...Object.values(m.manifest.tails).flat().map(p => p.name)]
  if (m.manifest.index) names.push(m.manifest.index.name)
  const missing: string[] = []
  for (const n of names) if (!(await target.has(n))) missing.push(n)
  return { name: m.name, missing }
}

async function settle (r: Replicator, store: Store): Promise<void> {
  await store.flush()
  for (let i = 0; i < 50; i++) {
    await r.tick()
    const s = await r.status()
    if (s.state !== 'shipping' && s.state !== 'caught-up') return
    if (s.lagBytes === 0 && s.shippedSeq === store.status().index.seq) return
  }
  throw new Error(`the replica did not catch up: ${JSON.stringify(await r.status())}`)
}

/**
 * Renews the replicator's lease now (the timer would every ttl / 3): deterministic, so that no
 * renewal runs while the test copies or replaces the replica directory.
 */
async function renewNow (r: Replicator): Promise<void> {
  await (r as unknown as { lease: Lease }).lease.renew()
}

t.test('the lease went back to an older version (its objects put back from a copy): FENCED, saying so', async t => {
  const spec = replicaDir(t)
  const target = parseTarget(spec)
  t.teardown(() => target.close())
  const lease = await Lease.acquire(target, { storeUuid: 'u1', ttlMs: 600_000 })
  const copy = path.join(tmp(t, 'copy'), 'replica')
  fs.cpSync(spec, copy, { recursive: true })
  await lease.renew()
  await lease.renew()
  putBack(copy, spec)
  let err: unknown
  try { await lease.renew() } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'FENCED'), 'renew is refused: FENCED', { got: String(err) })
  t.match((err as Error).message, /went back from version 3 \(generation 1\) to 1 \(generation 1\)/, 'naming the versions')
  t.notOk((err as Error).message.includes('\n'), 'one line')
  let checked: unknown
  try { await lease.check() } catch (e) { checked = e }
  t.ok(isLogdiskError(checked, 'FENCED'), 'and so is every fenced write (check)')
})

for (const when of ['before the lease was last renewed', 'after the lease was last renewed']) {
  t.test(`a replica put back from a copy taken ${when}: replication stops, no manifest names a missing object, a restart ships again and the replica recovers byte for byte`, async t => {
    const spec = replicaDir(t)
    const dir = path.join(tmp(t, 'a'), 'store')
    const store = await newStore(dir, spec)
    t.teardown(() => store.close())
    const target = parseTarget(spec)
    t.teardown(() => target.close())
    // The rounds and renewals are driven here (the lease's own timer would renew every 200 s).
    let r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000 })
    t.teardown(() => r.stop())
    await store.write(0, pattern(1, 5 * MiB))
    await settle(r, store)
    const copy = path.join(tmp(t, 'copy'), 'replica')
    fs.cpSync(spec, copy, { recursive: true })
    // Renewals after the copy, or none: then only the manifests tell.
    if (when.startsWith('before')) { await renewNow(r); await renewNow(r) }
    await store.write(4 * MiB, pattern(2, 6 * MiB))
    await settle(r, store)
    t.equal((await r.status()).state, 'caught-up', 'shipped past the copy')
    putBack(copy, spec)
    await store.write(12 * MiB, pattern(3, 5 * MiB))
    await store.flush()
    for (let i = 0; i < 5; i++) await r.tick()
    const st = await r.status()
    t.equal(st.state, 'fenced', 'replication stopped')
    t.match(st.lastError ?? '', /went back|put back from an older copy/, `and says why: ${st.lastError ?? ''}`)
    t.match(st.warnings.join(' '), /stopped/, 'status warns')
    const whole = await manifestWhole(target)
    t.same(whole.missing, [], `the newest manifest (${whole.name}) names only objects the replica has`)

    // Mounted again (--takeover: the lease put back is live and names this very process's
    // earlier holder, which cannot release it any more): it ships from what the replica holds.
    await r.stop()
    r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true })
    await settle(r, store)
    t.equal((await r.status()).state, 'caught-up', 'caught up after the restart')
    t.same((await manifestWhole(target)).missing, [], 'its manifest names only objects the replica has')
    const other = path.join(tmp(t, 'b'), 'store')
    await createFromReplica(other, parseTarget(spec), { spec })
    const rec = (await openStore(other)).store
    t.teardown(() => rec.close())
    t.equal(await imageSha(rec), await imageSha(store), 'the store made from the replica reads like the original')
  })
}

t.test('a takeover refused for a diverged history leaves the rightful writer its lease; it ships on', async t => {
  const spec = replicaDir(t)
  const dirA = path.join(tmp(t, 'a'), 'store')
  const a = await newStore(dirA, spec)
  t.teardown(() => a.close())
  const ra = await Replicator.start(a, parseTarget(spec), { spec, timer: false })
  t.teardown(() => ra.stop())
  await a.write(0, pattern(10, 3 * MiB))
  await settle(ra, a)
  const dirB = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(dirB, parseTarget(spec), { spec })
  writePolicy(dirB, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  // A ships on; B, made from the replica, writes something else: the histories part.
  await a.write(0, pattern(11, 1 * MiB))
  await settle(ra, a)
  const b = (await openStore(dirB, { checkpointIntervalMs: 100 })).store
  t.teardown(() => b.close())
  await b.write(0, pattern(12, 1 * MiB))
  await b.flush()
  const generation = (await ra.status()).generation
  let err: unknown
  try { await Replicator.start(b, parseTarget(spec), { spec, timer: false, takeover: true }) } catch (e) { err = e }
  t.ok(isLogdiskError(err, 'BAD_ARGUMENT'), 'the takeover is refused', { got: String(err) })
  t.match((err as Error).message, /holds a history this store does not have/)
  await a.write(2 * MiB, pattern(13, 1 * MiB))
  await settle(ra, a)
  const st = await ra.status()
  t.equal(st.state, 'caught-up', `the writer was not fenced: ${st.lastError ?? ''}`)
  t.equal(st.generation, generation, 'its generation is the same')
  const c = path.join(tmp(t, 'c'), 'store')
  await createFromReplica(c, parseTarget(spec), { spec })
  const rec = (await openStore(c)).store
  t.teardown(() => rec.close())
  t.equal(await imageSha(rec), await imageSha(a), 'the replica holds the writer\'s last writes')
})

t.test('a replica whose lease records were lost: the next writer takes a generation above its manifests\', not 1 again', async t => {
  // Found while testing the above under load: a copy taken while the lease renewed held no
  // lease record; put back, the next writer took generation 1 again, and its first manifest
  // collided with the old generation 1's ("written by someone else"): replication refused.
  const spec = replicaDir(t)
  const dir = path.join(tmp(t, 'a'), 'store')
  const store = await newStore(dir, spec)
  t.teardown(() => store.close())
  let r = await Replicator.start(store, parseTarget(spec), { spec, timer: false })
  await store.write(0, pattern(20, 3 * MiB))
  await settle(r, store)
  await r.stop()
  for (const f of fs.readdirSync(spec)) if (f.startsWith('lease.')) fs.rmSync(path.join(spec, f))
  r = await Replicator.start(store, parseTarget(spec), { spec, timer: false })
  t.teardown(() => r.stop())
  t.equal((await r.status()).generation, 2, 'generation 2: above the manifests of generation 1')
  await store.write(4 * MiB, pattern(21, 1 * MiB))
  await settle(r, store)
  t.equal((await r.status()).state, 'caught-up', 'it ships')
  const other = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(other, parseTarget(spec), { spec })
  const rec = (await openStore(other)).store
  t.teardown(() => rec.close())
  t.equal(await imageSha(rec), await imageSha(store), 'the replica recovers to the store')
})
