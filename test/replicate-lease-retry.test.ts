// A replicator whose start failed with IO (the target unreachable at mount: the mount goes on)
// retries every interval; a retry that then meets another holder's live lease (LEASE_HELD: the
// daemon before, killed with its S3 gateway, whose lease the target kept) waits for it to expire
// and then takes it. It went to state 'error' at that first refusal and never tried again, until
// a remount or a replicate.* policy change, although its status said "wait for the lease to
// expire" (a hostile test's A1, helper-76: seen end to end with Ceph). The refusal at the first
// start (a mount, strict) stays as it was.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Lease, parseTarget } from '../src/archive'
import { isLogdiskError } from '../src/errors'
import { Replicator } from '../src/replicate'
import { labelledPattern, newReplicatedStore, testTmp, until } from './helpers/replica-fixture'

t.setTimeout(120_000)
const MiB = 1024 * 1024

t.test('a retry that meets a live lease waits for it to expire, then takes it and ships', async t => {
  const base = testTmp(t, 'lease-retry', 'expire')
  const spec = path.join(base, 'replica')
  fs.mkdirSync(spec)
  const store = await newReplicatedStore(path.join(base, 'store'), spec, { sizeBytes: 16 * MiB, segmentBytes: 2 * MiB })
  t.teardown(() => store.close())

  // The holder before (killed: it neither renews nor releases) holds the lease a few seconds more.
  const rivalTarget = parseTarget(spec)
  t.teardown(() => rivalTarget.close())
  const rival = await Lease.acquire(rivalTarget, { storeUuid: store.config.uuid, ttlMs: 2000 })

  // The first start refuses, as at mount.
  const strictTarget = parseTarget(spec)
  t.teardown(() => strictTarget.close())
  const refused = await Replicator.start(store, strictTarget, { spec, timer: false }).then(() => undefined, (err: unknown) => err)
  t.ok(isLogdiskError(refused, 'LEASE_HELD'), `the first start is refused (${String(refused)})`)

  // The target is unreachable when replication starts: the start goes on (IO is not strict).
  const away = `${spec}.away`
  fs.renameSync(spec, away)
  const target = parseTarget(spec)
  t.teardown(() => target.close())
  const r = await Replicator.start(store, target, { spec, intervalMs: 100, timer: false })
  t.teardown(() => r.stop())
  t.equal((await r.status()).state, 'starting', 'the first start failed (IO) and is retried')

  // The target is back while the lease is live: the retry waits, saying until when.
  fs.renameSync(away, spec)
  await r.tick()
  let s = await r.status()
  t.equal(s.state, 'starting', `still retrying (${String(s.lastError)})`)
  t.match(s.lastError ?? '', /waiting for the lease to expire/, 'status says it waits for the lease')
  t.ok((s.lastError ?? '').includes(rival.current.expiresAt), 'and when it expires')

  await store.write(0, labelledPattern('lease-retry', 1, 1 * MiB))
  await store.flush()
  // Expired (ttl plus the 5 s allowed for clock skew): the next retry takes it and ships.
  await until('the lease taken after its expiry', async () => { await r.tick(); return (await r.status()).state !== 'starting' }, 30_000)
  s = await r.status()
  t.equal(s.state, 'caught-up', `replicating (${String(s.lastError)})`)
  t.equal(s.shippedSeq, store.status().index.seq, 'the write is shipped')
  t.equal(s.generation, rival.generation + 1, 'at the next generation')
})
