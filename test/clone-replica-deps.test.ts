// A clone made from a replica protects its snapshot on the replica's writer (issue 14 item 4,
// "the parent refuses to delete a snapshot that clones depend on, and says which"): the clone
// records its dependency on the replica; the writer, offline when the clone was made, reads it
// before `delete` and before snapshot.keep retention. `promote` of such a clone removes its
// hidden parent and releases the dependency, after which the writer may delete the snapshot.
// Also: a clone that dies halfway (stale record), a deletion that comes first (the deleting.
// mark refuses a later clone), an unreachable replica (delete refused, nothing deleted).
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseTarget } from '../src/archive'
import { applyAssignments, readPolicy, writePolicy } from '../src/policy/policy'
import { openStore } from '../src/app/open'
import { PolicyEngine } from '../src/policy/engine'
import { Replicator, cloneFromReplica, newestManifest, replicaParentDir } from '../src/replicate'
import { releaseReplicaParent } from '../src/replicate/clone-replica'
import { parentOf, promote } from '../src/clone/clone'
import { DELETING_PREFIX, DEPENDENCY_PREFIX } from '../src/replicate/clone-deps'
import { imageSha, labelledPattern, newReplicatedStore, testTmp, until } from './helpers/replica-fixture'
import { CLI, run } from './helpers/cli'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB
const SEGMENT = 2 * MiB
const pattern = (seed: number, bytes: number): Buffer => labelledPattern('deps', seed, bytes)
const tmp = (t: Test, name: string): string => testTmp(t, 'deps', name)
const cli = (args: string[], env: Record<string, string> = {}) => run(process.execPath, [CLI, ...args], { timeoutMs: 120_000, env })


/**
 * A store replicated to a directory with snapshots s1 and s2 and an index checkpoint; then the
 * writer goes offline (closed) before any clone is made. Returns the shas of its snapshots.
 */
async function offlineWriter (t: Test): Promise<{ dir: string, replica: string, s1: string, s2: string }> {
  const replica = path.join(tmp(t, 'target'), 'replica')
  fs.mkdirSync(replica)
  const dir = path.join(tmp(t, 'writer'), 'store')
  const store = await newReplicatedStore(dir, replica, { sizeBytes: SIZE, segmentBytes: SEGMENT })
  try {
    const target = parseTarget(replica)
    const r = await Replicator.start(store, target, { spec: replica, intervalMs: 100, indexEverySegments: 2 })
    try {
      await store.write(0, pattern(1, 6 * MiB))
      await store.snapshot({ name: 's1' })
      await store.write(1 * MiB, pattern(2, 3 * MiB))
      await store.snapshot({ name: 's2' })
      await store.write(16 * MiB, pattern(3, 6 * MiB))
      await store.flush()
      await until('the replica to catch up with an index checkpoint', async () => {
        const s = await r.status()
        return s.lagBytes === 0 && s.shippedSeq === store.status().index.seq && !!(await newestManifest(target))?.manifest.index
      })
    } finally {
      await r.stop({ final: true })
      await target.close()
    }
    return { dir, replica, s1: await imageSha(store, 's1'), s2: await imageSha(store, 's2') }
  } finally {
    await store.close()
  }
}

async function shaOf (dir: string, snapshot?: string): Promise<string> {
  const { store } = await openStore(dir)
  try { return await imageSha(store, snapshot) } finally { await store.close() }
}

const objects = (replica: string, prefix: string): string[] => fs.readdirSync(replica).filter(n => n.startsWith(prefix) && !n.includes('.tmp-'))
const snapshotsOf = async (dir: string): Promise<string[]> => {
  const { store } = await openStore(dir)
  try { return store.snapshots().map(s => s.name) } finally { await store.close() }
}

t.test('the writer, offline when a clone was made from its replica, refuses to delete the snapshot; promote releases it', { skip: fs.existsSync(CLI) ? false : 'run make build first' }, async t => {
  const w = await offlineWriter(t)
  const clone = path.join(tmp(t, 'host2'), 'golden')
  const made = await cli(['clone', w.replica, 's1', clone])
  t.equal(made.code, 0, `clone from the replica: ${made.stderr}`)
  t.equal(objects(w.replica, DEPENDENCY_PREFIX).length, 1, 'the clone recorded one dependency on the replica')

  const refused = await cli(['delete', w.dir, 's1'])
  t.equal(refused.code, 1, 'delete of the snapshot the clone reads: refused')
  t.match(refused.stderr, new RegExp(`^logdisk: snapshot s1 is the base of clone made from the replica ${w.replica} [^ ]+:${clone} \\(clone-dep\\.[0-9a-f]{32}\\): promote`), 'naming the clone, its host and record')
  t.same(await snapshotsOf(w.dir), ['s1', 's2'], 'nothing deleted')
  t.same(objects(w.replica, DELETING_PREFIX), [], 'the refused delete leaves no deleting. mark')
  const other = await cli(['delete', w.dir, 's2'])
  t.equal(other.code, 0, `a snapshot no clone reads is deleted: ${other.stderr}`)
  t.same(await snapshotsOf(w.dir), ['s1'])

  // The clone reads s1, writes its own; then promote: its hidden parent goes, and the dependency.
  await (async () => {
    const { store } = await openStore(clone)
    try {
      t.equal(await imageSha(store), w.s1, 'the clone reads s1 byte for byte')
      await store.write(3 * MiB, pattern(9, 256 * 1024))
      await store.flush()
    } finally { await store.close() }
  })()
  const want = await (async () => {
    const { store } = await openStore(clone)
    try { return await imageSha(store) } finally { await store.close() }
  })()
  // A promote that dies after the clone stands alone but before its hidden parent goes: kept
  // aside here and put back after the promote, as that crash would leave it.
  const aside = path.join(tmp(t, 'aside'), 'parent')
  fs.cpSync(replicaParentDir(clone), aside, { recursive: true })
  const p = await cli(['promote', clone, '--json'])
  t.equal(p.code, 0, `promote: ${p.stderr}`)
  t.equal(JSON.parse(p.stdout).removedParent, replicaParentDir(clone))
  t.notOk(fs.existsSync(replicaParentDir(clone)), 'the hidden parent is gone')
  t.same(objects(w.replica, DEPENDENCY_PREFIX), [], 'the dependency on the replica is released')
  fs.cpSync(aside, replicaParentDir(clone), { recursive: true })
  const again = await cli(['promote', clone])
  t.equal(again.code, 0, `promote again after a crash that left the hidden parent: ${again.stderr}`)
  t.match(again.stdout, /finished the interrupted promote: removed /, 'it finishes the interrupted promote')
  t.notOk(fs.existsSync(replicaParentDir(clone)), 'the hidden parent is gone again')
  const third = await cli(['promote', clone])
  t.equal(third.code, 1, 'and after that the store is simply not a clone')
  t.equal(await shaOf(clone), want, 'the promoted clone reads the same, without its hidden parent')
  const v = await cli(['verify', clone])
  t.equal(v.code, 0, `verify of the promoted clone is clean: ${v.stdout}${v.stderr}`)
  const now = await cli(['delete', w.dir, 's1'])
  t.equal(now.code, 0, `the writer can delete s1 now: ${now.stderr}`)
  t.same(await snapshotsOf(w.dir), [])
})

t.test('snapshot.keep retention keeps a snapshot a replica clone reads, with one warning', async t => {
  const w = await offlineWriter(t)
  // Automatic snapshots, the older one cloned from the replica (in-process: the library).
  const { store } = await openStore(w.dir)
  try {
    await store.snapshot({ name: 'auto-1' })
    await store.write(0, pattern(5, 4096))
    await store.snapshot({ name: 'auto-2' })
  } finally { await store.close() }
  const target = parseTarget(w.replica)
  // Replicated again, so the replica has the automatic snapshots.
  {
    const { store } = await openStore(w.dir, { checkpointIntervalMs: 100 })
    const r = await Replicator.start(store, target, { spec: w.replica, intervalMs: 100, indexEverySegments: 2 })
    await until('caught up', async () => (await newestManifest(target))?.manifest.snapshots.some(s => s.name === 'auto-2') === true)
    await r.stop({ final: true })
    await store.close()
  }
  const clone = path.join(tmp(t, 'host2'), 'c')
  await cloneFromReplica(target, w.replica, 'auto-1', clone)
  writePolicy(w.dir, applyAssignments(readPolicy(w.dir), ['snapshot.keep=1']))
  const warnings: string[] = []
  const log = { info () {}, warn (_f: object, msg: string) { warnings.push(msg) }, error () {} }
  const { store: s2 } = await openStore(w.dir)
  try {
    const engine = new PolicyEngine(s2, undefined, log)
    await engine.tick()
    await engine.tick()
    t.same(s2.snapshots().map(s => s.name), ['s1', 's2', 'auto-1', 'auto-2'], 'auto-1 is kept: a clone reads it')
    t.equal(warnings.length, 1, 'warned once, not on every tick')
    t.match(warnings[0], /snapshot\.keep=1: auto-1 is kept: snapshot auto-1 is the base of clone made from the replica/)
  } finally { await s2.close() }
  await target.close()
})

t.test('a clone that dies after recording its dependency does not block the writer on this host', { skip: fs.existsSync(CLI) ? false : 'run make build first' }, async t => {
  const w = await offlineWriter(t)
  const clone = path.join(tmp(t, 'host2'), 'c')
  const died = await cli(['clone', w.replica, 's1', clone], { LOGDISK_FAULTS: 'clone-after-dependency' })
  t.equal(died.code, 70, 'the clone process died halfway')
  t.equal(objects(w.replica, DEPENDENCY_PREFIX).length, 1, 'its record is on the replica')
  t.notOk(fs.existsSync(path.join(clone, 'clone.json')), 'no clone was made')
  const del = await cli(['delete', w.dir, 's1'])
  t.equal(del.code, 0, `the record is stale (its process is dead, its clone missing): delete goes on: ${del.stderr}`)
  // A clone removed by hand (rm -rf): its record is stale as well.
  const c2 = path.join(tmp(t, 'host2'), 'c2')
  t.equal((await cli(['clone', w.replica, 's2', c2])).code, 0)
  t.equal((await cli(['delete', w.dir, 's2'])).code, 1, 'while the clone exists: refused')
  fs.rmSync(c2, { recursive: true })
  fs.rmSync(replicaParentDir(c2), { recursive: true })
  const del2 = await cli(['delete', w.dir, 's2'])
  t.equal(del2.code, 0, `after it was removed: deleted: ${del2.stderr}`)
})

t.test('a deletion that came first refuses a later clone of that snapshot (the deleting. mark)', async t => {
  const w = await offlineWriter(t)
  // Deleted while the writer is offline from the replica: the replica's manifest still lists s1.
  const { store } = await openStore(w.dir)
  try {
    const { deleteSnapshotRespectingClones } = await import('../src/clone/delete-guard')
    await deleteSnapshotRespectingClones(store, 's1')
  } finally { await store.close() }
  const target = parseTarget(w.replica)
  t.teardown(() => target.close())
  t.ok((await newestManifest(target))!.manifest.snapshots.some(s => s.name === 's1'), 'the replica still lists s1')
  const clone = path.join(tmp(t, 'host2'), 'c')
  let err: unknown
  try { await cloneFromReplica(target, w.replica, 's1', clone) } catch (e) { err = e }
  t.equal((err as { code?: string }).code, 'NOT_FOUND', 'the clone is refused')
  t.match((err as Error).message, /writer has deleted snapshot s1/)
  t.same(objects(w.replica, DEPENDENCY_PREFIX), [], 'its dependency is released again')
  t.notOk(fs.existsSync(replicaParentDir(clone)), 'no hidden parent left behind')
  t.notOk(fs.existsSync(path.join(clone, 'clone.json')), 'no clone')
  await cloneFromReplica(target, w.replica, 's2', clone)
  t.equal(await shaOf(clone), w.s2, 'a snapshot not being deleted clones as before')
})

t.test('a damaged newest manifest: a clone is made from the older one that has the snapshot (helper-63)', async t => {
  // create --from now refuses a damaged newest manifest; a clone went through it and was
  // refused too, naming an option clone does not have. A snapshot is alike in every manifest.
  const w = await offlineWriter(t)
  // A newer manifest than the writer's last, damaged (the last one, with s2 shipped, is under it).
  const last = objects(w.replica, 'manifest.').sort().pop()!
  const version = Number(/\.v(\d+)$/.exec(last)![1])
  const damaged = last.replace(/\.v\d+$/, `.v${String(version + 1).padStart(12, '0')}`)
  fs.writeFileSync(path.join(w.replica, damaged), Buffer.concat([fs.readFileSync(path.join(w.replica, last)).subarray(0, 40), Buffer.from('garbage')]))
  const target = parseTarget(w.replica)
  t.teardown(() => target.close())
  t.equal((await newestManifest(target))!.name, last, `the newest intact manifest is the writer's last (${last}; damaged: ${damaged})`)
  const clone = path.join(tmp(t, 'host2'), 'c')
  await cloneFromReplica(target, w.replica, 's2', clone)
  t.equal(await shaOf(clone), w.s2, 'the clone reads s2')
})

t.test('an unreachable replica: delete is refused (IO) and deletes nothing', { skip: fs.existsSync(CLI) ? false : 'run make build first' }, async t => {
  const w = await offlineWriter(t)
  const gone = w.replica + '.moved'
  fs.renameSync(w.replica, gone)
  t.teardown(() => fs.rmSync(gone, { recursive: true, force: true }))
  const r = await cli(['delete', w.dir, 's1'])
  t.equal(r.code, 1)
  t.match(r.stderr, /^logdisk: snapshot s1 was not deleted: the replica .* cannot be checked for clones that depend on it \(.*\); try again when it is reachable/)
  t.same(await snapshotsOf(w.dir), ['s1', 's2'], 'nothing deleted')
})

t.test('promote with the replica unreachable at the release: the hidden parent goes, the record stays with a warning, and is stale for the writer here', { skip: fs.existsSync(CLI) ? false : 'run make build first' }, async t => {
  const w = await offlineWriter(t)
  const clone = path.join(tmp(t, 'host2'), 'c')
  const made = await cli(['clone', w.replica, 's1', clone, '--json'])
  t.equal(made.code, 0, made.stderr)
  const dependency = JSON.parse(made.stdout).dependency as string
  t.match(dependency, /^clone-dep\.[0-9a-f]{32}$/, '--json names the dependency')
  // The copy (it reads segments the hidden parent left on the replica), then the replica goes.
  const { store } = await openStore(clone)
  try {
    const p = parentOf(store)!
    await promote(store, p.record, p.parent)
  } finally { await store.close() }
  const away = w.replica + '.away'
  fs.renameSync(w.replica, away)
  let released
  try { released = await releaseReplicaParent(clone) } finally { fs.renameSync(away, w.replica) }
  t.match(released.warning ?? '', new RegExp(`^could not release the clone's dependency ${dependency.replace('.', '\\.')} on ${w.replica} \\(.*\\); the writer will refuse`), 'a warning naming the record')
  t.notOk(fs.existsSync(replicaParentDir(clone)), 'the hidden parent is gone')
  t.same(objects(w.replica, DEPENDENCY_PREFIX), [dependency], 'the record is still on the replica')
  const del = await cli(['delete', w.dir, 's1'])
  t.equal(del.code, 0, `the writer on this host sees it is stale (no clone any more): ${del.stderr}`)
})
