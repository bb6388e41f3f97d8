// Objects damaged on the replica target (helper-76, against a Ceph gateway): a damaged newest
// lease record stalled the holder's shipping and refused `mount` and `mount --takeover` with
// only the checksum line; a damaged segment object was never shipped again; and a policy change
// that restarted replication left the old target (its S3 client) open. Against a directory:
// a damaged record fails its JSON there as it fails the object's checksum on S3, and both are
// CORRUPT to the lease. No timing: every round is driven with tick().
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Lease, parseTarget, readLease, type ArchiveTarget } from '../src/archive'
import { isLogdiskError } from '../src/errors'
import { applyAssignments, readPolicy } from '../src/policy/policy'
import { Replicator, createFromReplica } from '../src/replicate'
import { ReplicationManager } from '../src/replicate/manager'
import { openStore } from '../src/app/open'
import { imageSha, interceptedTarget, labelledPattern, newReplicatedStore, testTmp } from './helpers/replica-fixture'

t.setTimeout(180_000)
const MiB = 1024 * 1024
const geometry = { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB }

/** Flips a byte of the object `name` in the directory replica `spec`. */
function damage (spec: string, name: string, at?: number): void {
  const file = path.join(spec, name)
  const b = fs.readFileSync(file)
  b[at ?? Math.floor(b.length / 2)] ^= 0xff
  fs.writeFileSync(file, b)
}

function newestLeaseObject (spec: string): string {
  return fs.readdirSync(spec).filter(n => /^lease\.v\d{12}$/.test(n)).sort().at(-1)!
}

async function writeSome (store: Awaited<ReturnType<typeof newReplicatedStore>>, seed: number, mib: number, at = 0): Promise<void> {
  for (let i = 0; i < mib; i++) await store.write((at + i) * MiB, labelledPattern('damaged-objects', seed * 100 + i, MiB))
  await store.flush()
}

t.test('the holder\'s own newest lease record damaged: it ships on, and its renewal makes a readable one', async t => {
  const base = testTmp(t, 'damaged', 'own-lease')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, geometry)
  t.teardown(() => store.close())
  const r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000 })
  t.teardown(() => r.stop())
  await writeSome(store, 1, 3)
  await r.tick()
  const before = (await r.status()).manifest
  const own = newestLeaseObject(spec)
  damage(spec, own, 3)
  await writeSome(store, 2, 3, 3)
  await r.tick()
  const s = await r.status()
  t.equal(s.lastError, null, 'the round worked')
  t.ok(s.state === 'shipping' || s.state === 'caught-up', s.state)
  t.not(s.manifest, before, `a manifest was put past the damaged record (${String(s.manifest)})`)
  // The next change of the lease (a release here) makes a readable version above it.
  await r.stop({ final: true })
  const after = await readLease(parseTarget(spec))
  t.ok(after !== undefined && after.released, 'released: the newest record reads again')
})

t.test('a damaged newest lease record of another holder: mount refused in one line; --takeover goes above every generation and fences the holder', async t => {
  const base = testTmp(t, 'damaged', 'lease')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, geometry)
  t.teardown(() => store.close())
  // The holder: this store's replicator (generation 1), whose lease lives on (a host cut off).
  const first = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000 })
  await writeSome(store, 3, 3)
  await first.tick()
  const held = (await readLease(parseTarget(spec)))!
  // A rival host that took it over meanwhile (generation 2), whose record is then damaged.
  const rival = await Lease.acquire(parseTarget(spec), { storeUuid: held.holder.storeUuid, takeover: true, ttlMs: 600_000, host: 'rival-host' })
  t.equal(rival.generation, 2)
  const damaged = newestLeaseObject(spec)
  damage(spec, damaged)

  // The first holder: a record made after its own is damaged: it may have been taken over.
  await writeSome(store, 4, 1, 3)
  await first.tick()
  const fs1 = await first.status()
  t.equal(fs1.state, 'fenced', `the first holder stops (${String(fs1.lastError)})`)
  t.match(String(fs1.lastError), damaged)
  await first.stop()

  // A mount (strict start) without --takeover: one line naming the object and what to do.
  const refused = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000 }).then(() => undefined, (err: Error) => err)
  t.ok(refused !== undefined && isLogdiskError(refused, 'CORRUPT'), 'refused')
  t.match(refused?.message ?? '', new RegExp(`newest record of the lease, ${damaged.replace(/\./g, '\\.')}, is damaged`))
  t.match(refused?.message ?? '', /logdisk mount --takeover/)
  t.notOk((refused?.message ?? '').includes('\n'), 'one line')

  // --takeover: a generation above every one on record (the damaged record's included).
  const warned: string[] = []
  const log = { info () {}, warn (_: object, m: string) { warned.push(m) }, error () {} }
  const taker = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, log })
  t.teardown(() => taker.stop())
  const ts = await taker.status()
  t.ok(ts.state === 'shipping' || ts.state === 'caught-up', `the takeover ships (${ts.state}: ${String(ts.lastError)})`)
  t.equal(ts.lastError, null)
  t.ok(ts.generation !== null && ts.generation > rival.generation, `generation ${String(ts.generation)} is above the damaged record's (${rival.generation})`)
  t.ok(warned.some(w => /damaged/.test(w)), 'the takeover says so')
  // The rival, still running, is fenced at its next check.
  const fenced = await rival.check().then(() => undefined, (err: Error) => err)
  t.ok(fenced !== undefined && isLogdiskError(fenced, 'FENCED'), `the rival holder is fenced (${String(fenced?.message)})`)
  await writeSome(store, 5, 2, 4)
  await taker.tick()
  t.equal((await taker.status()).lastError, null, 'the next round works')
  const sha = await imageSha(store)
  await taker.stop({ final: true })
  const copy = path.join(base, 'copy')
  await createFromReplica(copy, parseTarget(spec), { spec })
  const recovered = (await openStore(copy, {})).store
  t.teardown(() => recovered.close())
  t.equal(await imageSha(recovered), sha, 'a store recovered from the replica reads byte for byte')
})

t.test('a damaged segment object is shipped again from the store\'s copy; stores that read it read it again', async t => {
  const base = testTmp(t, 'damaged', 'segment')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, geometry)
  t.teardown(() => store.close())
  const warned: string[] = []
  const log = { info () {}, warn (_: object, m: string) { warned.push(m) }, error (_: object, m: string) { warned.push(m) } }
  let r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, checkEveryMs: 0, log })
  await writeSome(store, 6, 11)
  await r.tick()
  await r.tick() // the index checkpoint goes out once 4 sealed segments are on the replica
  const segs = fs.readdirSync(spec).filter(n => n.includes('.seg-')).sort()
  t.ok(segs.length >= 4, `sealed segments shipped (${segs.join(' ')})`)
  // A store recovered lazily before the damage reads segment 0 from the replica.
  const lazyDir = path.join(base, 'lazy')
  const lazyMade = await createFromReplica(lazyDir, parseTarget(spec), { spec })
  t.equal(lazyMade.mode, 'lazy', 'recovered lazily: its older segments stay on the replica')
  const lazy = (await openStore(lazyDir, {})).store
  t.teardown(() => lazy.close())
  const sha = await imageSha(store)
  damage(spec, segs[0])
  await t.rejects(imageSha(lazy), { code: 'CORRUPT' }, 'the lazy store cannot read the damaged segment')
  // Each round checks one shipped segment object in turn (checkEveryMs 0).
  for (let i = 0; i < segs.length; i++) await r.tick()
  t.ok(warned.some(w => w.includes(`${segs[0]} of segment 0 failed its check`) && w.includes('shipped it again')), `said so (${warned.join(' | ')})`)
  t.same((await r.status()).warnings, [])
  t.equal(await imageSha(lazy), sha, 'put again under its own name: the lazy store reads it byte for byte')

  // Objects of an older generation (the process that shipped them is gone): the header says
  // what each held (one intact, one with a damaged sha256 field that still mostly agrees), and
  // the new holder puts them again.
  await r.stop({ final: true })
  damage(spec, segs[1])
  damage(spec, segs[2], 30) // in its header's sha256: the rest of it still says what it held
  r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, checkEveryMs: 0, log })
  t.teardown(() => r.stop())
  for (let i = 0; i < segs.length + 1; i++) await r.tick()
  t.ok(warned.some(w => w.includes(`${segs[1]} of segment 1 failed its check`) && w.includes('shipped it again')), `an older generation's object shipped again (${warned.join(' | ')})`)
  t.ok(warned.some(w => w.includes(`${segs[2]} of segment 2 failed its check`) && w.includes('shipped it again')), 'and one whose header is damaged')
  t.same((await r.status()).warnings, [])
  await r.stop({ final: true })
  // The whole log (--at the first snapshot-free point: before the index checkpoint) decodes byte for byte.
  const copy = path.join(base, 'copy')
  const made = await createFromReplica(copy, parseTarget(spec), { spec, at: '1' })
  t.equal(made.mode, 'full', 'the whole log fetched')
  const full = path.join(base, 'full')
  await createFromReplica(full, parseTarget(spec), { spec })
  const recovered = (await openStore(full, {})).store
  t.teardown(() => recovered.close())
  t.equal(await imageSha(recovered), sha, 'a store recovered from the replica reads byte for byte')
  t.ok((await recovered.verify()).ok, 'and verifies clean')
})

t.test('a damaged segment object whose local copy changed since is not shipped again: status says so', async t => {
  const base = testTmp(t, 'damaged', 'changed')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, geometry)
  t.teardown(() => store.close())
  const r = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, checkEveryMs: 0 })
  t.teardown(() => r.stop())
  await writeSome(store, 7, 5)
  await r.tick()
  const seg0 = fs.readdirSync(spec).filter(n => n.includes('.seg-')).sort()[0]
  // Flip a byte of the object's body and, as if compaction had rewritten it since, one of the
  // store's segment file: the store's copy is no longer what was shipped.
  damage(spec, seg0)
  const file = fs.readdirSync(path.join(base, 'store'), { recursive: true }).map(String).find(f => /seg-0+\.log$/.test(f))!
  damage(path.join(base, 'store'), file, 3 * 4096 + 100)
  for (let i = 0; i < 3; i++) await r.tick()
  const s = await r.status()
  t.ok(s.warnings?.some(w => w.includes(`${seg0} of segment 0 is damaged`) && w.includes('changed since it was shipped')), `status says so (${JSON.stringify(s.warnings)})`)
  t.ok(fs.readdirSync(spec).includes(seg0), 'the object was left as it is')
})

t.test('a policy change that restarts replication closes the old target', async t => {
  const base = testTmp(t, 'damaged', 'close')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, geometry)
  t.teardown(() => store.close())
  const made: Array<{ closed: number }> = []
  const targetFor = (s: string): ArchiveTarget => {
    const inner = parseTarget(s)
    const counts = { closed: 0 }
    made.push(counts)
    const t2 = interceptedTarget(inner, () => undefined)
    return Object.assign(Object.create(t2) as ArchiveTarget, { close: async () => { counts.closed++; await inner.close() } })
  }
  const m = new ReplicationManager(store, undefined, { targetFor })
  let p = readPolicy(store.dir)
  await m.apply(p, true)
  t.equal(made.length, 1)
  for (const interval of ['2s', '3s']) {
    p = applyAssignments(p, [`replicate.interval=${interval}`])
    await m.apply(p, true)
  }
  t.equal(made.length, 3, 'each change started a replicator on a new target')
  t.same(made.map(c => c.closed), [1, 1, 0], 'the ones before it were closed')
  await m.stop()
  t.same(made.map(c => c.closed), [1, 1, 1], 'and the last at the stop')
})
