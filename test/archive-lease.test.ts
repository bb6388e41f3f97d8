// The one-writer lease (src/archive/lease.ts) and the putIfAbsent it is built on, as one
// conformance suite run against every backend: a directory, s3rver (which ignores conditional
// writes: the emulated, weaker mode) and a Ceph object gateway (If-None-Match honoured). Two
// "hosts" are two processes (test/helpers/lease-host.ts) racing for one replica's lease.
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { Lease, readLease, type ArchiveTarget, type ExclusiveCreate } from '../src/archive'
import type { S3Settings } from '../src/archive/s3'
import { isLogdiskError, LogdiskError, type ErrorCode } from '../src/errors'
import { startCeph } from './helpers/ceph'
import { makeTarget, type TargetSpec } from './helpers/lease-host'
import { startLeaseHost, type LeaseHostProcess } from './helpers/lease-hosts'
import { startS3Server } from './helpers/s3-server'

async function rejectsCode (t: Test, promise: Promise<unknown>, code: ErrorCode, what: string): Promise<LogdiskError | undefined> {
  try {
    await promise
  } catch (err) {
    t.ok(isLogdiskError(err, code), `${what}: ${code}`, { got: err instanceof LogdiskError ? `${err.code}: ${err.message}` : String(err) })
    return err instanceof LogdiskError ? err : undefined
  }
  t.fail(`${what}: resolved, expected ${code}`)
  return undefined
}

interface Backend {
  /** A fresh target over this test's storage (the same storage on every call). */
  make: () => ArchiveTarget
  /** The same storage, for a lease-host process. */
  spec: TargetSpec
  /** Every name in the raw storage, temporary objects included. */
  raw: () => Promise<string[]>
}

interface Kind {
  label: string
  expect: ExclusiveCreate
  setup: (t: Test) => Promise<Backend>
  /** Rounds of the two-process race. */
  rounds: number
}

const STORE_A = crypto.randomUUID()
const STORE_B = crypto.randomUUID()

function leaseConformance (t: Test, kind: Kind): void {
  const { label } = kind
  const targets = (t: Test, b: Backend): (() => ArchiveTarget) => () => {
    const target = b.make()
    t.teardown(async () => await target.close())
    return target
  }

  t.test(`${label}: putIfAbsent creates once; conditional writes are ${kind.expect}`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const target = make()
    t.equal(await target.exclusiveCreate(), kind.expect, `exclusiveCreate() is ${kind.expect}`)
    const x = crypto.randomBytes(3000)
    t.equal(await target.putIfAbsent('obj-a', x), true, 'the first creation succeeds')
    t.ok((await target.get('obj-a')).equals(x), 'and stored its bytes')
    t.equal(await target.putIfAbsent('obj-a', Buffer.from('other')), false, 'a second creation is refused')
    t.ok((await target.get('obj-a')).equals(x), 'the first bytes are intact')
    await target.put('obj-b', Buffer.from('put'))
    t.equal(await make().putIfAbsent('obj-b', Buffer.from('other')), false, 'an object made by put counts as present too')
    const contenders = Array.from({ length: 8 }, (_, i) => ({ target: make(), data: Buffer.from(`contender ${i} ${crypto.randomBytes(8).toString('hex')}`) }))
    const results = await Promise.all(contenders.map(async c => await c.target.putIfAbsent('obj-race', c.data)))
    const pattern = results.map(r => r ? 'W' : '-').join('')
    if (kind.expect === 'atomic') {
      t.equal(results.filter(Boolean).length, 1, `of 8 concurrent creations exactly one wins (${pattern})`)
    } else {
      // Emulated: no false wins. s3rver can tear concurrent PUTs of one key (the bytes of one,
      // the metadata of another): then no one wins and the object reads as CORRUPT.
      t.ok(results.filter(Boolean).length <= 1, `of 8 concurrent creations at most one wins (${pattern})`)
    }
    if (results.includes(true)) {
      t.ok((await target.get('obj-race')).equals(contenders[results.indexOf(true)].data), 'the stored bytes are the winner\'s')
    } else {
      await rejectsCode(t, target.get('obj-race'), 'CORRUPT', 'no winner: the server tore the object')
    }
    await rejectsCode(t, target.putIfAbsent('bad/name', Buffer.from('x')), 'BAD_ARGUMENT', 'a bad name')
    t.same(await target.list(), ['obj-a', 'obj-b', 'obj-race'], 'list shows the objects')
    t.same((await b.raw()).filter(n => n.includes('.tmp-')), [], 'no temporary or probe objects are left behind')
  })

  t.test(`${label}: acquire, renew, a second host refused by name, release, acquire again`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const a = await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a', ttlMs: 20_000 })
    t.equal(a.generation, 1, 'generation 1')
    t.match(a.current, { version: 1, released: false, exclusive: kind.expect, holder: { host: 'host-a', pid: process.pid, storeUuid: STORE_A } }, 'the record names its holder')
    t.notOk('tookOverFrom' in a.current, 'nothing was taken over')
    t.same(await readLease(make()), a.current, 'readLease sees it from another target')
    const expires1 = Date.parse(a.current.expiresAt)
    t.ok(expires1 > Date.now() + 15_000, 'it expires ttl from now')

    await new Promise(resolve => setTimeout(resolve, 20))
    for (let i = 0; i < 4; i++) await a.renew()
    t.equal(a.generation, 1, 'renewing keeps the generation')
    t.equal(a.current.version, 5, 'each renewal is a new version')
    t.ok(Date.parse(a.current.expiresAt) > expires1, 'and moves the expiry')
    t.same(await make().list('lease.v'), ['lease.v000000000004', 'lease.v000000000005'], 'old versions are collected: the newest two stay')

    const err = await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b' }), 'LEASE_HELD', 'a second host')
    t.match(err?.message ?? '', new RegExp(`held by host-a \\(pid ${process.pid}, store ${STORE_A}, generation 1\\)`), 'the error names the holder: host, pid, store, generation')
    t.match(err?.message ?? '', /--takeover/, 'and says what to do')
    t.notMatch(err?.message ?? '', /\n/, 'in one line')
    t.equal((await readLease(make()))?.holder.host, 'host-a', 'the refused host changed nothing')

    await a.release()
    t.equal((await readLease(make()))?.released, true, 'release is recorded')
    await rejectsCode(t, a.renew(), 'CLOSED', 'renew after release')
    const b2 = await Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b' })
    t.equal(b2.generation, 2, 'after a release another host acquires without takeover: generation 2')
    t.notOk('tookOverFrom' in b2.current, 'a released lease is not taken over')
    await b2.release()
  })

  t.test(`${label}: an expired lease is acquired without takeover; its old holder is fenced`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const t0 = Date.now()
    const a = await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a', ttlMs: 1000, now: () => t0 })
    await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', skewMs: 500, now: () => t0 + 1400 }), 'LEASE_HELD', 'within ttl + skew')
    const later = await Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', skewMs: 500, now: () => t0 + 1600 })
    t.equal(later.generation, 2, 'past ttl + skew: acquired, generation 2')
    t.equal(later.current.tookOverFrom?.holder.host, undefined, 'an expired lease is not recorded as taken over')
    const err = await rejectsCode(t, a.check(), 'FENCED', 'the old holder\'s check')
    t.match(err?.message ?? '', /taken over by host-b .*generation 2/, 'names the new holder')
    await rejectsCode(t, a.renew(), 'FENCED', 'the old holder\'s renew')
    await rejectsCode(t, a.fence().put('seg-x', Buffer.from('late')), 'FENCED', 'the old holder\'s write')
    t.equal(await make().has('seg-x'), false, 'nothing was written')
  })

  t.test(`${label}: takeover fences the live holder: its writes and deletes are refused, the new holder's go through`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const a = await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a' })
    const fa = a.fence()
    await fa.put('seg-1', Buffer.from('one from a'))
    t.equal((await make().get('seg-1')).toString(), 'one from a', 'the holder writes through its fenced target')
    await rejectsCode(t, fa.put('lease.v000000000009', Buffer.from('{}')), 'BAD_ARGUMENT', 'the lease\'s own objects cannot be written through it')

    await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b' }), 'LEASE_HELD', 'without takeover')
    const bl = await Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', takeover: true })
    t.equal(bl.generation, 2, 'takeover: generation 2')
    t.match(bl.current.tookOverFrom, { generation: 1, holder: { host: 'host-a', storeUuid: STORE_A } }, 'the record names whom it took over from')

    const err = await rejectsCode(t, fa.put('seg-2', Buffer.from('two from a')), 'FENCED', 'the fenced holder\'s put')
    t.match(err?.message ?? '', new RegExp(`taken over by host-b \\(pid ${process.pid}, store ${STORE_B}, generation 2\\)`), 'names the new holder')
    t.match(err?.message ?? '', /host-a .*generation 1.* is fenced/, 'and the fenced one')
    t.equal(await make().has('seg-2'), false, 'the refused put wrote nothing')
    await rejectsCode(t, fa.delete('seg-1'), 'FENCED', 'the fenced holder\'s delete')
    await rejectsCode(t, fa.putIfAbsent('seg-3', Buffer.from('x')), 'FENCED', 'the fenced holder\'s putIfAbsent')
    t.equal(await make().has('seg-1'), true, 'the refused delete deleted nothing')
    t.equal((await fa.get('seg-1')).toString(), 'one from a', 'reads still work for the fenced holder')

    const fb = bl.fence()
    await fb.put('seg-2', Buffer.from('two from b'))
    t.equal((await make().get('seg-2')).toString(), 'two from b', 'the new holder writes')
    await rejectsCode(t, a.renew(), 'FENCED', 'the fenced holder cannot renew itself back')
    await rejectsCode(t, a.release(), 'FENCED', 'nor release the new holder\'s lease')
    t.equal((await readLease(make()))?.holder.host, 'host-b', 'host-b still holds it')
    const again = await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a' }), 'LEASE_HELD', 'host-a acquiring again without takeover')
    t.match(again?.message ?? '', /held by host-b/, 'is told who holds it')
  })

  t.test(`${label}: a damaged newest lease record: ${kind.expect === 'atomic' ? 'CORRUPT (the holder is unknown); a takeover goes above it' : 'skipped (a torn creation no one won)'}`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const a = await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a' })
    await make().put('lease.v000000000002', Buffer.from('{"format":1,"version":2,"gen'))
    if (kind.expect === 'atomic') {
      const err = await rejectsCode(t, readLease(make()), 'CORRUPT', 'readLease')
      t.match(err?.message ?? '', /lease\.v000000000002/, 'names the record')
      const refused = await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b' }), 'CORRUPT', 'an acquire without takeover')
      t.match(refused?.message ?? '', /newest record of the lease, lease\.v000000000002, is damaged .*logdisk mount --takeover/, 'names the record and what to do')
      // Made after host-a's own record: it may be a takeover, so host-a stops.
      await rejectsCode(t, a.check(), 'FENCED', 'the holder before it')
      // A takeover: above every generation on record and above what the damaged one can hold.
      const bl = await Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', takeover: true, generationsOnRecord: async () => 1 })
      t.equal(bl.generation, 3, 'generation 3: above host-a\'s 1 and the damaged record\'s at most 2')
      t.same(bl.current.replacedDamaged, ['lease.v000000000002'])
      t.equal((await readLease(make()))?.holder.host, 'host-b')
      await rejectsCode(t, a.renew(), 'FENCED', 'host-a cannot renew')
      await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-c', takeover: true })
      await rejectsCode(t, bl.check(), 'FENCED', 'a later takeover fences host-b as any other')
    } else {
      t.equal((await readLease(make()))?.holder.host, 'host-a', 'readLease skips it: host-a holds the lease')
      t.equal((await a.renew()).version, 3, 'the holder renews above it: version 3')
      await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b' }), 'LEASE_HELD', 'another host')
    }
  })

  t.test(`${label}: autoRenew keeps the lease past its ttl; a takeover stops it and reports the loss`, async t => {
    const b = await kind.setup(t)
    const make = targets(t, b)
    const ttlMs = kind.expect === 'atomic' ? 1000 : 3000
    const a = await Lease.acquire(make(), { storeUuid: STORE_A, host: 'host-a', ttlMs })
    let lost: LogdiskError | undefined
    const errors: unknown[] = []
    const stop = a.autoRenew({ onLost: err => { lost = err }, onError: err => errors.push(err) })
    t.teardown(stop)
    await new Promise(resolve => setTimeout(resolve, ttlMs * 2))
    await rejectsCode(t, Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', skewMs: 0 }), 'LEASE_HELD', `after 2 x ttl with autoRenew, still held (version ${a.current.version})`)
    t.ok(a.current.version >= 3, `renewed in the background (version ${a.current.version})`)
    await Lease.acquire(make(), { storeUuid: STORE_B, host: 'host-b', takeover: true })
    const deadline = Date.now() + ttlMs * 3
    while (lost === undefined && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    t.equal(lost?.code, 'FENCED', 'onLost got FENCED after the takeover')
    t.same(errors, [], 'no other errors')
  })

  t.test(`${label}: two hosts (processes) race for the lease ${kind.rounds} times: one holder each round, the loser told who`, async t => {
    const b = await kind.setup(t)
    const hosts = await Promise.all([
      startLeaseHost({ target: b.spec, host: 'racer-1', storeUuid: STORE_A }),
      startLeaseHost({ target: b.spec, host: 'racer-2', storeUuid: STORE_B })
    ])
    t.teardown(() => hosts.forEach(h => h.kill()))
    const wins: string[] = []
    for (let round = 1; round <= kind.rounds; round++) {
      const at = Date.now() + 300
      const replies = await Promise.all(hosts.map(async h => await h.send({ op: 'acquire', at })))
      const winners = hosts.filter((_, i) => replies[i].ok)
      // atomic: exactly one acquire succeeds. emulated: two may both believe they won (a PUT
      // slower than the settle time); then exactly one passes its next check.
      const holders: LeaseHostProcess[] = []
      for (const w of winners) if ((await w.send({ op: 'check' })).ok) holders.push(w)
      if (kind.expect === 'atomic') t.equal(winners.length, 1, `round ${round}: exactly one acquire succeeded`)
      else t.ok(winners.length >= 1, `round ${round}: ${winners.length} acquire(s) succeeded (emulated)`)
      t.equal(holders.length, 1, `round ${round}: exactly one holder passes its check`)
      const holder = holders[0]
      const record = await readLease(b.make())
      t.equal(record?.holder.host, holder?.host, `round ${round}: the lease names ${holder?.host}`)
      for (const [i, h] of hosts.entries()) {
        if (h === holder || replies[i].ok) continue
        t.equal(replies[i].code, 'LEASE_HELD', `round ${round}: ${h.host} got LEASE_HELD`)
        t.match(replies[i].message ?? '', new RegExp(`held by ${holder?.host} `), `round ${round}: naming ${holder?.host}`)
      }
      wins.push(holder?.host ?? '?')
      t.same(await holder!.send({ op: 'release' }), { ok: true }, `round ${round}: ${holder?.host} releases`)
    }
    t.comment(`${label}: winners by round: ${wins.join(' ')}`)
    await Promise.all(hosts.map(async h => await h.send({ op: 'exit' })))
  })

  t.test(`${label}: two hosts (processes): the second takes over; the first's later writes are refused`, async t => {
    const b = await kind.setup(t)
    const [first, second] = await Promise.all([
      startLeaseHost({ target: b.spec, host: 'first-host', storeUuid: STORE_A }),
      startLeaseHost({ target: b.spec, host: 'second-host', storeUuid: STORE_B })
    ])
    t.teardown(() => { first.kill(); second.kill() })
    t.match(await first.send({ op: 'acquire' }), { ok: true, generation: 1 }, 'the first host acquires')
    t.same(await first.send({ op: 'put', name: 'seg-000001', text: 'first host, segment 1' }), { ok: true }, 'and writes')
    const refused = await second.send({ op: 'acquire' })
    t.equal(refused.code, 'LEASE_HELD', 'the second host is refused')
    t.match(refused.message ?? '', /held by first-host \(pid \d+, store [0-9a-f-]+, generation 1\)/, 'naming the first host, its pid, store and generation')
    t.match(await second.send({ op: 'acquire', takeover: true }), { ok: true, generation: 2 }, 'the second host takes over')
    const late = await first.send({ op: 'put', name: 'seg-000002', text: 'first host, too late' })
    t.equal(late.code, 'FENCED', 'the first host\'s next write is refused: FENCED')
    t.match(late.message ?? '', /taken over by second-host/, 'naming the second host')
    t.equal(await b.make().has('seg-000002'), false, 'nothing of it reached the replica')
    t.same(await second.send({ op: 'put', name: 'seg-000002', text: 'second host, segment 2' }), { ok: true }, 'the second host writes')
    t.equal((await b.make().get('seg-000002')).toString(), 'second host, segment 2', 'its bytes are there')
    t.equal((await first.send({ op: 'renew' })).code, 'FENCED', 'the first host cannot renew')
    t.equal((await b.make().get('seg-000001')).toString(), 'first host, segment 1', 'what the first host wrote before stays')
    await Promise.all([first.send({ op: 'exit' }), second.send({ op: 'exit' })])
  })
}

// ---------------------------------------------------------------------------------------------
// Backends

leaseConformance(t, {
  label: 'dir',
  expect: 'atomic',
  rounds: 4,
  setup: async t => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-lease-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    return { make: () => makeTarget({ kind: 'dir', dir }), spec: { kind: 'dir', dir }, raw: async () => fs.readdirSync(dir).sort() }
  }
})

function s3Backend (service: Promise<{ bucket: string, settings: S3Settings }>, settleMs?: number): (t: Test) => Promise<Backend> {
  let prefixes = 0
  return async () => {
    const s = await service
    const spec: TargetSpec = { kind: 's3', bucket: s.bucket, prefix: `lease/t${++prefixes}`, settings: s.settings, settleMs }
    return {
      make: () => makeTarget(spec),
      spec,
      // The raw listing, temporary objects included: through the SDK, under the test's prefix.
      raw: async () => await rawList(s.settings, s.bucket, `${spec.prefix}/`)
    }
  }
}

async function rawList (settings: S3Settings, bucket: string, prefix: string): Promise<string[]> {
  const client = new S3Client({
    endpoint: settings.endpoint,
    region: settings.region,
    forcePathStyle: true,
    credentials: { accessKeyId: settings.accessKeyId!, secretAccessKey: settings.secretAccessKey! }
  })
  try {
    const out = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))
    return (out.Contents ?? []).map(o => (o.Key ?? '').slice(prefix.length)).sort()
  } finally {
    client.destroy()
  }
}

const S3RVER = startS3Server()
S3RVER.catch(() => undefined)
t.teardown(async () => { await (await S3RVER).stop() })
leaseConformance(t, {
  label: 's3rver',
  expect: 'emulated',
  rounds: 3,
  // s3rver runs in this process: a settle time well above its PUT latency here.
  setup: s3Backend(S3RVER, 400)
})

const CEPH = (async () => {
  const g = await startCeph()
  t.teardown(g.stop)
  t.comment(`ceph: radosgw answering in ${g.startSeconds.toFixed(1)} s`)
  await g.createBucket('logdisk-lease')
  return { bucket: 'logdisk-lease', settings: g.settings }
})()
CEPH.catch(() => undefined)
leaseConformance(t, { label: 'ceph', expect: 'atomic', rounds: 4, setup: s3Backend(CEPH) })
