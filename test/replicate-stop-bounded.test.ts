// Stopping replication (what an unmount does) is bounded when the target hangs instead of
// refusing. Replicator.stop({final}) waited for the round in flight with no bound, raced its
// last round against finalMs but then awaited that same round anyway, and then the lease's
// release, unbounded too: with radosgw stopped (SIGSTOP: an endpoint that accepts and never
// answers, each S3 call ending only at the SDK's timeouts) an unmount took 8 minutes, and
// `logdisk unmount` gave up after 30 s (a hostile test's A2, helper-76). Now the rounds get
// finalMs and the release at least 2 s; what outlasts that is abandoned: it goes no further than
// the call it waits for (no manifest, no replica.json, nothing of the store after it was
// closed), and the store mounts again and ships what was left.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseTarget, readLease, type ArchiveTarget } from '../src/archive'
import { openStore } from '../src/app/open'
import { REPLICA_STATE_FILE, Replicator } from '../src/replicate'
import { MANIFEST_PREFIX } from '../src/replicate/format'
import { interceptedTarget, labelledPattern, newReplicatedStore, testTmp, until } from './helpers/replica-fixture'

t.setTimeout(180_000)
const MiB = 1024 * 1024
/** How long each call of a hung target takes before it is answered (standing in for the SDK's timeouts). */
const HANG_MS = 3000

/** The target, but while `hung.on` each call waits HANG_MS first; every call is recorded in `calls`. */
function hangable (inner: ArchiveTarget, hung: { on: boolean }, calls: string[]): ArchiveTarget {
  return interceptedTarget(inner, async (op, arg) => {
    calls.push(`${op} ${arg}`)
    if (hung.on) await new Promise(resolve => setTimeout(resolve, HANG_MS))
  })
}

t.test('stop({final}) with a hung target returns about finalMs later; what it abandoned touches nothing after', async t => {
  const base = testTmp(t, 'stop-bounded', 'hung')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const dir = path.join(base, 'store')
  let store = await newReplicatedStore(dir, spec, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  const inner = parseTarget(spec)
  t.teardown(() => inner.close())
  const hung = { on: false }
  const calls: string[] = []
  const warned: string[] = []
  const log = { info () {}, warn (_f: object, m: string) { warned.push(m) }, error () {} }
  const r = await Replicator.start(store, hangable(inner, hung, calls), { spec, intervalMs: 100, timer: false, log })
  await r.tick()

  // Writes to ship; the endpoint hangs; a round is in flight when the unmount comes.
  await store.write(0, labelledPattern('stop-bounded', 1, 6 * MiB))
  await store.flush()
  hung.on = true
  void r.tick()
  await new Promise(resolve => setTimeout(resolve, 200))
  const at = Date.now()
  await r.stop({ final: true, finalMs: 500 })
  const took = Date.now() - at
  t.ok(took < 5000, `stop returned ${took} ms after it was asked (finalMs 500, the release at least 2000; each hung call takes ${HANG_MS} ms)`)
  t.match(warned.filter(m => /replication stopped/.test(m)), [/not on the replica .*did not answer within 0.5 s.*its lease was not released/], 'one line says what was not shipped')

  // The endpoint answers again (what was waiting too). An unmount closes the store now: what
  // the stop abandoned must not use it any more (seen here on the store still open, where it
  // would go on: its uses of the store are recorded).
  const manifests = await inner.list(MANIFEST_PREFIX)
  const stateFile = path.join(dir, REPLICA_STATE_FILE)
  const state = fs.readFileSync(stateFile, 'utf8')
  const after = calls.length
  const touched: string[] = []
  const methods = ['flush', 'checkpoint', 'status', 'logSegments', 'readLog', 'entries', 'indexRows', 'snapshots'] as const
  const spied = store as unknown as Record<string, (...args: unknown[]) => unknown>
  for (const m of methods) {
    const f = spied[m].bind(store)
    spied[m] = (...args: unknown[]) => { touched.push(m); return f(...args) }
  }
  hung.on = false
  await until('the abandoned release', async () => (await readLease(inner))?.released === true, 30_000)
  await new Promise(resolve => setTimeout(resolve, HANG_MS + 500)) // the round's call in flight answered
  for (const m of methods) Reflect.deleteProperty(spied, m)
  await store.close()
  t.same(touched, [], 'the store untouched after the stop')
  t.same(calls.slice(after).filter(c => !/^(list|get|putIfAbsent|delete) lease\.v/.test(c)), [], 'the target: only the lease\'s release went on')
  t.same(await inner.list(MANIFEST_PREFIX), manifests, 'no manifest after the stop')
  t.equal(fs.readFileSync(stateFile, 'utf8'), state, 'replica.json untouched after the stop')

  // Mounted again: the lease is free and what was left is shipped.
  store = (await openStore(dir, { checkpointIntervalMs: 100 })).store
  t.teardown(() => store.close())
  const again = parseTarget(spec)
  t.teardown(() => again.close())
  const r2 = await Replicator.start(store, again, { spec, intervalMs: 100, timer: false })
  t.teardown(() => r2.stop())
  await r2.tick()
  const s = await r2.status()
  t.equal(s.state, 'caught-up', `shipping again (${String(s.lastError)})`)
  t.equal(s.shippedSeq, store.status().index.seq, 'what the stop left is shipped')
})
