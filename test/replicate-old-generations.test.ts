// Objects of an older replication generation after a crash or a takeover (a hostile test's
// D3): before, the new generation never deleted them. Its garbage list is in memory, so what
// a crashed writer had queued (superseded tails, index checkpoints, manifest versions) stayed;
// the older generation's manifests were never queued at all; and objects put just before the
// crash (their manifest never written) or by a fenced holder after the takeover were named by
// no manifest and stayed for ever. Now the holder sweeps them (replicator.ts, old-generations.ts),
// keeping what its newest manifest names and what a clone of the replica may still read.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DirTarget, parseTarget } from '../src/archive'
import { LogdiskError } from '../src/errors'
import { applyAssignments, defaultPolicy, writePolicy } from '../src/policy/policy'
import { openStore } from '../src/app/open'
import type { Store } from '../src/store'
import { Hydrator, Replicator, cloneFromReplica, createFromReplica, newestManifest, type Manifest } from '../src/replicate'
import { encodeManifest } from '../src/replicate/format'
import { planOldGenerationSweep, stillDeletable } from '../src/replicate/old-generations'
import { recordReader, releaseReader } from '../src/replicate/reader-records'
import { imageSha, labelledPattern, newReplicatedStore, testTmp } from './helpers/replica-fixture'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const GEOMETRY = { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB }
const pattern = (seed: number, bytes: number): Buffer => labelledPattern('old-generations', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'oldgen', name)

function replicaDir (t: Test): string {
  const d = path.join(tmp(t, 'target'), 'replica')
  fs.mkdirSync(d)
  return d
}

/** A directory target whose manifest puts can be made to fail: a writer that dies between a round's data objects and its manifest. */
class DiesBeforeManifest extends DirTarget {
  dying = false
  async putIfAbsent (name: string, data: Buffer): Promise<boolean> {
    if (this.dying && name.startsWith('manifest.')) throw new LogdiskError('IO', `${name}: the writer died before its manifest (simulated)`)
    return await super.putIfAbsent(name, data)
  }
}

/** A directory target whose manifest listing is as it was before generation `hidden` published its first. */
class ListsBefore extends DirTarget {
  constructor (dir: string, private readonly hidden: number) { super(dir) }
  async list (prefix?: string): Promise<string[]> {
    return (await super.list(prefix)).filter(n => !n.startsWith('manifest.') || (generationOf(n) ?? 0) < this.hidden)
  }
}

const generationOf = (name: string): number | undefined => {
  const m = /^(?:manifest\.)?g(\d{6})\./.exec(name)
  return m ? Number(m[1]) : undefined
}

/** The replica's objects written by generations before `generation`, sorted. */
function olderObjects (spec: string, generation: number): string[] {
  return fs.readdirSync(spec).filter(n => (generationOf(n) ?? Infinity) < generation).sort()
}

/** Every object a manifest names. */
function namedBy (m: Manifest): Set<string> {
  const names = [...Object.values(m.segments), ...Object.values(m.tails).flat().map(p => p.name)]
  if (m.index) names.push(m.index.name)
  return new Set(names)
}

async function caughtUp (r: Replicator, store: Store): Promise<void> {
  await store.flush()
  for (let i = 0; i < 20; i++) {
    await r.tick()
    const s = await r.status()
    if (s.lagBytes === 0 && s.shippedSeq === store.status().index.seq) return
  }
  throw new Error(`not caught up: ${JSON.stringify(await r.status())}`)
}

async function shaOf (dir: string, snapshot?: string): Promise<string> {
  const s = (await openStore(dir)).store
  try { return await imageSha(s, snapshot) } finally { await s.close() }
}

/** A replicating store with `bytes` of pattern `seed` written and shipped (an index checkpoint too with `indexEverySegments`). */
async function shippedStore (t: Test, seed: number, bytes: number, indexEverySegments?: number): Promise<{ spec: string, store: Store, rA: Replicator, gen1: number, last: { name: string, manifest: Manifest } }> {
  const spec = replicaDir(t)
  const store = await newReplicatedStore(path.join(tmp(t, 'a'), 'store'), spec, GEOMETRY)
  t.teardown(() => store.close())
  const rA = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, indexEverySegments })
  await store.write(0, pattern(seed, bytes))
  await caughtUp(rA, store)
  for (let i = 0; i < 5 && indexEverySegments !== undefined && !(await newestManifest(parseTarget(spec)))!.manifest.index; i++) await rA.tick()
  return { spec, store, rA, gen1: (await rA.status()).generation!, last: (await newestManifest(parseTarget(spec)))! }
}

/**
 * What a fenced holder's late round leaves: a manifest after `last` of its generation whose
 * `segments` name late objects (copies of what `from` names there); returns its name.
 */
function writeLateManifest (spec: string, last: { name: string, manifest: Manifest }, gen: number, late: Record<string, { object: string, from: string }>): string {
  const { sha256: _, ...body } = last.manifest
  const segments = { ...body.segments }
  for (const [id, { object, from }] of Object.entries(late)) {
    fs.copyFileSync(path.join(spec, from), path.join(spec, object))
    segments[id] = object
  }
  const name = `manifest.g${String(gen).padStart(6, '0')}.v${String(last.manifest.version + 1).padStart(12, '0')}`
  fs.writeFileSync(path.join(spec, name), encodeManifest({ ...body, version: last.manifest.version + 1, previous: last.name, segments }))
  return name
}

t.test('a writer killed between its data objects and its manifest, restarted (--takeover of its own lease): the older generation\'s objects go, recovery reads every byte', async t => {
  const spec = replicaDir(t)
  const dir = path.join(tmp(t, 'a'), 'store')
  const store = await newReplicatedStore(dir, spec, GEOMETRY)
  t.teardown(() => store.close())
  const dying = new DiesBeforeManifest(spec)
  // No timer: the rounds are driven here. Index checkpoints every 2 segments: some are superseded.
  const rA = await Replicator.start(store, dying, { spec, timer: false, leaseTtlMs: 600_000, indexEverySegments: 2 })
  await store.write(0, pattern(1, 1 * MiB))
  await store.snapshot({ name: 's1' })
  for (let i = 1; i < 8; i++) {
    await store.write(i * MiB, pattern(1 + i, 1 * MiB))
    await caughtUp(rA, store)
  }
  // The round the writer dies in: its tail object is put, its manifest never is.
  await store.write(10 * MiB, pattern(20, 300_000))
  await store.flush()
  dying.dying = true
  await rA.tick()
  const gen1 = (await rA.status()).generation!
  t.match((await rA.status()).lastError, /died before its manifest/, 'the round died before its manifest')
  const before = olderObjects(spec, gen1 + 1)
  const named = new Set<string>()
  for (const n of before.filter(n => n.startsWith('manifest.'))) for (const o of namedBy(JSON.parse(fs.readFileSync(path.join(spec, n), 'utf8')) as Manifest)) named.add(o)
  const unnamed = before.filter(n => !n.startsWith('manifest.') && !named.has(n))
  t.ok(unnamed.some(n => /^g\d{6}\.tail-/.test(n)), `the dead round left an object no manifest names: ${unnamed.join(' ')}`)
  t.ok(before.filter(n => n.startsWith('manifest.')).length >= 4, 'and its generation\'s manifests')
  // Killed: no stop, so its lease stays live and the garbage it had queued (in memory) is lost.

  const rB = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, indexEverySegments: 2, garbageGraceMs: 0 })
  t.teardown(() => rB.stop())
  const gen2 = (await rB.status()).generation!
  t.equal(gen2, gen1 + 1, 'the restart writes a new generation')
  await store.write(12 * MiB, pattern(30, 3 * MiB))
  await caughtUp(rB, store)
  await rB.tick()
  const newest = (await newestManifest(parseTarget(spec)))!
  t.equal(newest.manifest.generation, gen2)
  const left = olderObjects(spec, gen2)
  t.comment(`objects of generation ${gen1} before the restart: ${before.length}; after the new generation caught up: ${left.length}`)
  t.same(left.filter(n => !namedBy(newest.manifest).has(n)), [], 'no object of the older generation is left that the newest manifest does not name')
  t.ok(left.length > 0 && left.every(n => /^g\d{6}\.seg-/.test(n) || n === newest.manifest.index?.name), `what is left of it are the segments the new generation inherited: ${left.join(' ')}`)
  for (const n of namedBy(newest.manifest)) t.ok(fs.existsSync(path.join(spec, n)), `${n} (named) is there`)

  // A store made from the replica alone reads what the writer has, and so does one cut at s1
  // (before the index checkpoint: the whole log fetched, older generation's segments included).
  const want = await imageSha(store)
  const b = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(b, parseTarget(spec), { spec })
  t.equal(await shaOf(b), want, 'create --from: byte for byte')
  const at = path.join(tmp(t, 'at'), 'store')
  const rr = await createFromReplica(at, parseTarget(spec), { spec, at: 's1' })
  t.equal(rr.mode, 'full')
  t.equal(await shaOf(at), await imageSha(store, 's1'), 'create --from --at s1: byte for byte')
})

t.test('a takeover while the first writer goes on: its late objects go; a clone of the replica keeps the manifest it was made from and reads the same bytes', async t => {
  const spec = replicaDir(t)
  const dirA = path.join(tmp(t, 'a'), 'store')
  const a = await newReplicatedStore(dirA, spec, GEOMETRY)
  t.teardown(() => a.close())
  const rA = await Replicator.start(a, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, indexEverySegments: 1 })
  t.teardown(() => rA.stop())
  await a.write(0, pattern(40, 6 * MiB))
  await a.snapshot({ name: 'gold' })
  await a.write(6 * MiB, pattern(41, 2 * MiB))
  await caughtUp(rA, a)
  for (let i = 0; i < 5 && !(await newestManifest(parseTarget(spec)))!.manifest.index; i++) await rA.tick()
  t.ok((await newestManifest(parseTarget(spec)))!.manifest.index, 'an index checkpoint is shipped')
  const gold = await imageSha(a, 'gold')
  // A clone of the replica (lazy: older segments read from the replica, by name, for as long as it lives).
  const dirC = path.join(tmp(t, 'c'), 'clone')
  const cloned = await cloneFromReplica(parseTarget(spec), spec, 'gold', dirC)
  t.equal(cloned.recovered.mode, 'lazy')
  t.ok(cloned.recovered.remoteSegments > 0, `the clone reads ${cloned.recovered.remoteSegments} segments from the replica`)
  const cloneManifest = cloned.recovered.manifest

  // Host B, made from the replica, takes it over; A goes on writing and shipping.
  const dirB = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(dirB, parseTarget(spec), { spec })
  writePolicy(dirB, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  const b = (await openStore(dirB, { checkpointIntervalMs: 100 })).store
  t.teardown(() => b.close())
  const rB = await Replicator.start(b, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, indexEverySegments: 1, garbageGraceMs: 0, sweepEveryMs: 0 })
  t.teardown(() => rB.stop())
  const gen = (await rB.status()).generation!
  await a.write(8 * MiB, pattern(42, 5 * MiB))
  await a.flush()
  await rA.tick()
  t.equal((await rA.status()).state, 'fenced', 'A is fenced at its manifest')
  const named = namedBy((await newestManifest(parseTarget(spec)))!.manifest)
  const late = olderObjects(spec, gen).filter(n => !n.startsWith('manifest.') && !named.has(n))
  t.ok(late.some(n => /\.seg-/.test(n)), `A's late objects landed, named by no manifest of the replica: ${late.join(' ')}`)

  await b.write(20 * MiB, pattern(43, 3 * MiB))
  await caughtUp(rB, b)
  await rB.tick()
  const newest = (await newestManifest(parseTarget(spec)))!
  t.equal(newest.manifest.generation, gen)
  const cm = JSON.parse(fs.readFileSync(path.join(spec, cloneManifest), 'utf8')) as Manifest
  const left = olderObjects(spec, gen)
  t.comment(`left of the older generation: ${left.join(' ')}`)
  for (const n of late) t.notOk(left.includes(n), `late ${n} is gone`)
  const cloneReads = new Set(Object.values(cm.segments))
  t.same(left.filter(n => !namedBy(newest.manifest).has(n) && !cloneReads.has(n) && n !== cloneManifest), [], 'nothing else of it is left')
  t.ok(left.includes(cloneManifest), `the manifest the clone was made from (${cloneManifest}) is kept`)
  for (const n of cloneReads) t.ok(fs.existsSync(path.join(spec, n)), `${n}, a segment object it names, is there`)
  t.notOk(left.some(n => n.startsWith('manifest.') && n !== cloneManifest), 'the older generation\'s other manifests are gone')

  const c = (await openStore(dirC)).store
  try {
    t.equal(await imageSha(c), gold, 'the clone reads snapshot gold, byte for byte')
  } finally {
    await c.close()
  }
  const dirD = path.join(tmp(t, 'd'), 'store')
  await createFromReplica(dirD, parseTarget(spec), { spec })
  t.equal(await shaOf(dirD), await imageSha(b), 'a store made from the replica reads what B has')
})

t.test('a clone made from a fenced holder\'s late manifest keeps it and the segment objects it names; a record that names no manifest (an older release\'s) keeps every older segment object; without a record they go', async t => {
  const { spec, store, gen1, last } = await shippedStore(t, 50, 3 * MiB)
  // Killed; restarted with --takeover.
  const rB = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, garbageGraceMs: 0, sweepEveryMs: 0 })
  t.teardown(() => rB.stop())
  const gen2 = (await rB.status()).generation!
  // What a fenced holder's late round leaves, landing after the takeover adopted its chain: a
  // segment object and a manifest naming it; and a clone made from that manifest in that moment.
  const lateSeg = `g${String(gen1).padStart(6, '0')}.seg-000000000099.ldarch`
  const lateManifest = writeLateManifest(spec, last, gen1, { 99: { object: lateSeg, from: Object.values(last.manifest.segments)[0] } })
  const record = `clone-dep.${crypto.randomBytes(16).toString('hex')}`
  const dep = { format: 1, name: record, snapshot: 'x', seq: 1, host: 'elsewhere', dir: '/x', pid: 1, createdAt: new Date().toISOString() }
  fs.writeFileSync(path.join(spec, record), JSON.stringify({ ...dep, manifest: lateManifest }) + '\n')
  await store.write(4 * MiB, pattern(51, 1 * MiB))
  await caughtUp(rB, store)
  await rB.tick()
  const oldManifests = (): string[] => olderObjects(spec, gen2).filter(n => n.startsWith('manifest.'))
  t.same(oldManifests(), [lateManifest], 'the older generation\'s manifests go, but the one the clone was made from')
  t.ok(fs.existsSync(path.join(spec, lateSeg)), 'and the segment object it names, which the newest manifest does not')

  // A record of an older release names no manifest: which segment objects its clone reads is not known.
  fs.writeFileSync(path.join(spec, record), JSON.stringify(dep) + '\n')
  await rB.tick()
  t.same(oldManifests(), [], 'no clone names the late manifest any more: it goes')
  t.ok(fs.existsSync(path.join(spec, lateSeg)), 'the segment object stays for the record that names none')

  fs.rmSync(path.join(spec, record))
  await rB.tick()
  t.notOk(fs.existsSync(path.join(spec, lateSeg)), 'the record removed: it goes')
  const newest = namedBy((await newestManifest(parseTarget(spec)))!.manifest)
  t.same(olderObjects(spec, gen2).filter(n => !newest.has(n)), [], 'nothing of the older generation is left that the newest manifest does not name')
  const b = path.join(tmp(t, 'b'), 'store')
  await createFromReplica(b, parseTarget(spec), { spec })
  t.equal(await shaOf(b), await imageSha(store), 'create --from: byte for byte')
})

t.test('a store recovered lazily from a fenced holder\'s late manifest: its reader record keeps the objects only that manifest names until it has them all; then they go', async t => {
  const { spec, store, gen1, last } = await shippedStore(t, 60, 9 * MiB, 1)
  t.ok(last.manifest.index, 'an index checkpoint is shipped')
  const atLate = await imageSha(store)
  // Killed; restarted with --takeover.
  const rB = await Replicator.start(store, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, garbageGraceMs: 0, sweepEveryMs: 0 })
  t.teardown(() => rB.stop())
  const gen2 = (await rB.status()).generation!
  // The fenced holder's late round: its manifest names its own (late) objects for the sealed
  // segments before the checkpoint, which the new generation's manifests do not name.
  const late = Object.fromEntries(Object.entries(last.manifest.segments).slice(0, 2).map(([id, from]) => [id, { object: `g${String(gen1).padStart(6, '0')}.seg-${id.padStart(12, '0')}.late.ldarch`, from }]))
  const lateObjects = Object.values(late).map(l => l.object)
  const lateManifest = writeLateManifest(spec, last, gen1, late)
  // Created from it in the moment it was the newest: a listing before B's first manifest.
  const lazyDir = path.join(tmp(t, 'lazy'), 'store')
  const rec = await createFromReplica(lazyDir, new ListsBefore(spec, gen2), { spec })
  t.equal(rec.manifest, lateManifest)
  t.equal(rec.mode, 'lazy')
  t.ok(rec.remoteSegments >= 2, `it reads ${rec.remoteSegments} segments on the replica`)
  const readers = (): string[] => fs.readdirSync(spec).filter(n => n.startsWith('reader.'))
  t.equal(readers().length, 1, 'it put its reader record on the replica')

  await store.write(12 * MiB, pattern(61, 1 * MiB))
  await caughtUp(rB, store)
  await rB.tick()
  t.equal((await newestManifest(parseTarget(spec)))!.manifest.generation, gen2)
  for (const n of lateObjects) t.ok(fs.existsSync(path.join(spec, n)), `${n}, which only the late manifest names, is kept`)
  t.equal(await shaOf(lazyDir), atLate, 'the lazy store reads every byte, from the replica')

  // Brought back: the record goes, and with it what it kept.
  const lazy = (await openStore(lazyDir)).store
  try {
    await new Hydrator(lazy).done()
    t.equal(await imageSha(lazy), atLate, 'every segment local: the same bytes')
  } finally {
    await lazy.close()
  }
  t.same(readers(), [], 'the reader record is deleted once every segment is local')
  await rB.tick()
  for (const n of lateObjects) t.notOk(fs.existsSync(path.join(spec, n)), `${n} goes at the next sweep`)
  t.equal(await shaOf(lazyDir), atLate, 'and the store still reads the same')
})

t.test('a store recovered lazily that takes the replica over deletes its reader record: its own manifests name what it reads there', async t => {
  const { spec, store, rA } = await shippedStore(t, 70, 9 * MiB, 1)
  await rA.stop()
  const dirB = path.join(tmp(t, 'b'), 'store')
  const rec = await createFromReplica(dirB, parseTarget(spec), { spec })
  t.equal(rec.mode, 'lazy')
  const readers = (): string[] => fs.readdirSync(spec).filter(n => n.startsWith('reader.'))
  t.equal(readers().length, 1, 'B put its reader record')
  writePolicy(dirB, applyAssignments(defaultPolicy(), [`replicate.target=${spec}`]))
  const b = (await openStore(dirB, { checkpointIntervalMs: 100 })).store
  t.teardown(() => b.close())
  const rB = await Replicator.start(b, parseTarget(spec), { spec, timer: false, leaseTtlMs: 600_000, takeover: true, garbageGraceMs: 0, sweepEveryMs: 0 })
  t.teardown(() => rB.stop())
  t.same(readers(), [], 'holding the replica, B deleted it')
  await b.write(12 * MiB, pattern(71, 1 * MiB))
  await caughtUp(rB, b)
  await rB.tick()
  t.equal(await imageSha(b), await imageSha(store).then(async () => {
    const c = path.join(tmp(t, 'c'), 'store')
    await createFromReplica(c, parseTarget(spec), { spec })
    return await shaOf(c)
  }), 'B reads what a store made from the replica now reads')
})

t.test('a reader record put after the sweep planned (its recovery checked the manifest before the sweep deleted it): the objects are listed again and kept', async t => {
  const { spec, gen1, last } = await shippedStore(t, 80, 5 * MiB)
  const late = `g${String(gen1).padStart(6, '0')}.seg-000000000077.ldarch`
  const lateManifest = writeLateManifest(spec, last, gen1, { 77: { object: late, from: Object.values(last.manifest.segments)[0] } })
  const plan = await planOldGenerationSweep(parseTarget(spec), gen1 + 1, new Set())
  t.ok(plan.manifests.includes(lateManifest) && plan.objects.includes(late), 'with no record, the sweep plans to delete the late manifest and its object')
  // A recovery puts its record now (and sees the manifest still there), then the sweep deletes the manifests.
  const reader = await recordReader(parseTarget(spec), path.join(tmp(t, 'r'), 'store'), lateManifest)
  for (const n of plan.manifests) fs.rmSync(path.join(spec, n))
  const left = await stillDeletable(parseTarget(spec), plan.objects)
  t.notOk(left.includes(late), 'listed again, the record keeps the object (its manifest gone, every older segment object is kept)')
  await releaseReader(parseTarget(spec), reader.name)
  t.ok((await stillDeletable(parseTarget(spec), plan.objects)).includes(late), 'the record released: it may go')
})
