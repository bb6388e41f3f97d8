// During an outage of the target the daemon logs each distinct failure once, not once per
// interval. The check compared with the last failure only, so the lease renewal's failure and
// the round's alternated and both were logged at every renewal for as long as the outage lasted
// (a hostile test's A4, helper-76). Once a round works again, the next outage is logged again.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { parseTarget, type ArchiveTarget } from '../src/archive'
import { LogdiskError } from '../src/errors'
import { Replicator } from '../src/replicate'
import { interceptedTarget, labelledPattern, newReplicatedStore, testTmp } from './helpers/replica-fixture'

t.setTimeout(120_000)
const MiB = 1024 * 1024
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** The target, but while `down.on` every call fails naming its operation, as an S3 endpoint's do. */
function failable (inner: ArchiveTarget, down: { on: boolean }): ArchiveTarget {
  return interceptedTarget(inner, (op, arg) => {
    if (down.on) throw new LogdiskError('IO', `${inner.describe()}: ${op} ${arg}: connect ECONNREFUSED`)
  })
}

t.test('an outage logs each distinct failure once', async t => {
  const base = testTmp(t, 'outage-log', 'once')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  t.teardown(() => store.close())
  const inner = parseTarget(spec)
  t.teardown(() => inner.close())
  const down = { on: false }
  const target = failable(inner, down)
  const warned: string[] = []
  const log = { info () {}, warn (f: object, m: string) { warned.push(`${m}: ${String((f as { err?: string }).err)}`) }, error () {} }
  // The lease renews every 2 s (ttl / 3), the rounds run every 100 ms.
  const r = await Replicator.start(store, target, { spec, intervalMs: 100, timer: false, log, leaseTtlMs: 6000 })
  t.teardown(() => r.stop())
  await r.tick()

  const outage = async (seed: number): Promise<string[]> => {
    const from = warned.length
    down.on = true
    await store.write(0, labelledPattern('outage-log', seed, 1 * MiB))
    await store.flush()
    for (let i = 0; i < 70; i++) { await r.tick(); await sleep(100) } // three renewals or more
    down.on = false
    await r.tick()
    t.equal((await r.status()).state, 'caught-up', 'caught up after the outage')
    return warned.slice(from).filter(w => /shipping failed/.test(w))
  }
  const first = await outage(1)
  t.ok(first.some(w => /list lease/.test(w)) && first.some(w => /put g0/.test(w)), `the renewal's and the round's failures were logged (${first.join(' | ')})`)
  t.equal(first.length, new Set(first).size, `each once (${first.length} lines for a 7 s outage)`)
  const second = await outage(2)
  t.ok(second.length >= 1, 'the next outage is logged again')
})
