// The policy engine with a fake clock (temporal, retention, baseline by age, events), and
// once through a real mounted daemon.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { PolicyEngine, AUTO_PREFIX, type PoolPolicyTarget } from '../src/policy/engine'
import { applyAssignments, defaultPolicy, type Policy } from '../src/policy/policy'
import { Store } from '../src/store'
import { CLI, canMount, cleanup, daemonLog, logdisk, must, run, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024

interface Logged { msg: string, fields: object }

async function setup (t: { teardown: (fn: () => Promise<void> | void) => void }, assignments: string[], pool?: PoolPolicyTarget) {
  const clock = { ms: Date.now() }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-engine-'))
  const dir = path.join(root, 'store')
  await Store.create(dir, { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB })
  const store = await Store.open(dir, { clock: () => clock.ms })
  const logged: Logged[] = []
  const log = { info: (fields: object, msg: string) => logged.push({ fields, msg }), warn () {}, error: (fields: object, msg: string) => logged.push({ fields, msg: `ERROR ${msg}` }) }
  // These tests are about what the engine runs, not the history window: history.keep=0.
  let policy: Policy = applyAssignments(defaultPolicy(), ['history.keep=0', ...assignments])
  const engine = new PolicyEngine(store, pool, log, () => clock.ms, () => policy)
  t.teardown(async () => {
    await store.close()
    fs.rmSync(root, { recursive: true, force: true })
  })
  return { store, engine, clock, logged, dir, setPolicy: (a: string[]) => { policy = applyAssignments(policy, a) } }
}

t.test('snapshot.every takes automatic snapshots on the clock; snapshot.keep retires the oldest', async t => {
  const { store, engine, clock, logged } = await setup(t, ['snapshot.every=10s', 'snapshot.keep=2'])
  await store.snapshot({ name: 'mine' })
  const autos = () => store.snapshots().filter(s => s.name.startsWith(AUTO_PREFIX)).map(s => s.name)
  await engine.tick()
  t.same(autos(), [], 'nothing at t=0')
  clock.ms += 9_000
  await engine.tick()
  t.same(autos(), [], 'nothing before 10 s')
  const taken: string[] = []
  for (let i = 0; i < 4; i++) {
    clock.ms += 10_000
    await store.write(i * 4096, Buffer.alloc(4096, i + 1))
    await engine.tick()
    taken.push(autos()[autos().length - 1])
  }
  t.equal(new Set(taken).size, 4, 'one new snapshot every 10 s')
  t.same(autos(), taken.slice(-2), 'retention keeps the newest 2 automatic snapshots')
  t.ok(store.snapshots().some(s => s.name === 'mine'), 'a user snapshot is never retired')
  t.equal(logged.filter(l => /retention no longer keeps/.test(l.msg)).length, 2, 'each retirement is logged')
  const last = store.snapshotNamed(taken[3])
  t.ok((await store.readSnapshot(last.name, 3 * 4096, 4096)).equals(Buffer.alloc(4096, 4)), 'automatic snapshots read like any other')
})

t.test('baseline.olderThan merges into the baseline once the oldest snapshot is old enough', async t => {
  const { store, engine, clock, logged } = await setup(t, ['baseline.olderThan=1h'])
  for (let off = 0; off < 4 * MiB; off += MiB) await store.write(off, Buffer.alloc(MiB, off / MiB + 1))
  await store.snapshot({ name: 'old' })
  await store.write(0, Buffer.alloc(MiB, 9))
  const image = await store.readSnapshot('old', 0, 4 * MiB)
  clock.ms += 30 * 60_000
  await engine.tick()
  t.notOk(logged.some(l => /baseline/.test(l.msg)), 'not at 30 minutes')
  clock.ms += 31 * 60_000
  await engine.tick()
  t.ok(logged.some(l => /merged everything up to snapshot old into the baseline/.test(l.msg)), 'merged after an hour')
  t.ok((await store.readSnapshot('old', 0, 4 * MiB)).equals(image), 'the snapshot reads the same from the baseline')
  t.ok((await store.read(0, MiB)).equals(Buffer.alloc(MiB, 9)), 'current reads the same')
  const count = logged.length
  clock.ms += 61 * 60_000
  await engine.tick()
  t.equal(logged.filter(l => /baseline/.test(l.msg)).length, 1, 'nothing new to merge: no second merge')
  t.ok(logged.length >= count)
  t.ok((await store.verify()).ok)
})

t.test('event policies: on.sync and on.unmount take snapshots; on.snapshot compacts', async t => {
  const { store, engine, logged, setPolicy } = await setup(t, ['on.sync=snapshot', 'on.unmount=snapshot'])
  await store.syncPoint('nightly')
  await engine.onEvent('sync')
  t.equal(store.snapshots().length, 1, 'on.sync=snapshot')
  await engine.onEvent('unmount')
  t.equal(store.snapshots().length, 2, 'on.unmount=snapshot')
  setPolicy(['on.sync=none', 'on.unmount=none', 'on.snapshot=compact'])
  await engine.onEvent('sync')
  t.equal(store.snapshots().length, 2, 'on.sync=none does nothing')
  // Overwrite a lot, then a snapshot event: compaction frees the old versions.
  for (let pass = 0; pass < 3; pass++) for (let off = 0; off < 8 * MiB; off += MiB) await store.write(off, Buffer.alloc(MiB, pass + 1))
  await store.deleteSnapshot(store.snapshots()[0].name)
  await store.deleteSnapshot(store.snapshots()[0].name)
  const before = store.status().segments.active
  await engine.onEvent('snapshot')
  t.ok(logged.some(l => l.msg === 'compacted') || store.status().segments.active < before, 'on.snapshot=compact ran a compaction')
  t.ok(store.status().segments.recycled > 0, `segments recycled: ${store.status().segments.recycled}`)
  t.ok((await store.read(0, MiB)).equals(Buffer.alloc(MiB, 3)))
})

t.test('compact.at compacts when the pool is that full, again only after it grew by a step; 0 never', async t => {
  // A pool whose numbers the test sets (MiB): what the engine reads on each tick.
  const use = { usedBytes: 0, capacityBytes: 100 * MiB }
  const pool: PoolPolicyTarget = { setPolicy () {}, async tick () {}, use: () => ({ ...use }) }
  const { store, engine, logged, setPolicy } = await setup(t, ['compact.at=0.8'], pool)
  const compactions = () => logged.filter(l => l.msg.startsWith('compact.at=')).length
  const overwrite = async (fill: number) => { for (let off = 0; off < 8 * MiB; off += MiB) await store.write(off, Buffer.alloc(MiB, fill)) }
  for (let pass = 1; pass <= 3; pass++) await overwrite(pass)
  use.usedBytes = 79 * MiB
  await engine.tick()
  t.equal(compactions(), 0, 'below compact.at: no compaction (compact.every is 10 minutes away)')
  t.equal(store.status().segments.recycled, 0, 'nothing recycled')
  use.usedBytes = 80 * MiB
  await engine.tick()
  t.equal(compactions(), 1, 'at compact.at: compacts at once')
  t.ok(store.status().segments.recycled > 0, `and frees what was overwritten (${store.status().segments.recycled} segments recycled)`)
  t.ok((await store.read(0, 8 * MiB)).equals(Buffer.alloc(8 * MiB, 3)), 'the newest data reads back')
  await engine.tick()
  use.usedBytes = 83 * MiB // step: max(2 segments = 4 MiB, 2% of 100 MiB) = 4 MiB
  await engine.tick()
  t.equal(compactions(), 1, 'still that full but grown by less than a step: not again')
  use.usedBytes = 84 * MiB
  await engine.tick()
  t.equal(compactions(), 2, 'grown by a step: compacts again')
  setPolicy(['compact.at=0'])
  use.usedBytes = 100 * MiB
  await engine.tick()
  t.equal(compactions(), 2, 'compact.at=0: never')
})

t.test('a mounted daemon applies snapshot.every and snapshot.keep, and says so in its log', { skip: canMount() }, async t => {
  const dir = tmpDir('engine-mount')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  t.equal((await logdisk('policy', 'set', store, 'snapshot.every=1s', 'snapshot.keep=2')).code, 0)
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_MAINTENANCE_TICK_MS: '200' } })
  t.equal(mounted.code, 0, mounted.stderr)
  await new Promise(resolve => setTimeout(resolve, 4500))
  const list = JSON.parse((await logdisk('snapshots', store, '--json')).stdout) as Array<{ name: string }>
  t.equal(list.filter(s => s.name.startsWith(AUTO_PREFIX)).length, 2, `2 automatic snapshots kept: ${list.map(s => s.name).join(', ')}`)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  const log = await daemonLog(store, /retention no longer keeps/)
  t.match(log, /snapshot\.every: took snapshot auto-/, 'the log says it took snapshots')
  t.match(log, /retention no longer keeps/, 'the log says retention deleted snapshots')
})
