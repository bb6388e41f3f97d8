import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import t, { type Test } from 'tap'
import {
  ARCHIVE_HEADER_BYTES,
  ArchiveCodec,
  decodeArchive,
  DirTarget,
  encodeArchive,
  parseTarget,
  readArchiveHeader,
  S3Target,
  type ArchiveFaults,
  type ArchiveTarget
} from '../src/archive'
import { resolveS3Settings, type S3Settings } from '../src/archive/s3'
import { isLogdiskError, LogdiskError, type ErrorCode } from '../src/errors'
import { crc32c } from '../src/store/crc'
import { Rng } from '../src/testing/rng'
import { startCeph } from './helpers/ceph'
import { closedPort, startS3Server, startSilentServer } from './helpers/s3-server'

const SEED = Number(process.env.ARCHIVE_SEED ?? 0xa2c41)
t.comment(`seed ${SEED} (rerun with ARCHIVE_SEED=${SEED})`)
const rng = new Rng(SEED)
const MiB = 1024 * 1024
/** An unreachable target must fail within this (the no-hang promise). */
const FAIL_FAST_MS = 8000

const run = promisify(execFile)

/** Asserts that `promise` rejects with a LogdiskError of `code`; returns it. */
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

/** Something that looks like a segment: zeros, text and random blocks. */
function segmentLike (bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  for (let at = 0; at < bytes; at += 4096) {
    const kind = rng.int(3)
    const len = Math.min(4096, bytes - at)
    if (kind === 1) out.write('logdisk archive segment block '.repeat(140).slice(0, len), at)
    else if (kind === 2) rng.bytes(len).copy(out, at)
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// The conformance suite: one function, run against every backend.

interface Backend {
  name: string
  /** A target over this test's storage (the same storage on every call within one test). */
  make: (faults?: ArchiveFaults) => ArchiveTarget
  /** Every name in this test's raw storage, temporary objects included. */
  raw: () => Promise<string[]>
  /** Flips one byte of the stored bytes of `name`, behind the target's back. */
  damage: (name: string) => Promise<void>
}

/** Targets that cannot be used: each operation must fail with IO, fast, in one line. */
interface Unreachable {
  label: string
  make: (t: Test) => Promise<ArchiveTarget | undefined>
  /** Operations that must fail (default: all five). */
  ops?: Array<'put' | 'get' | 'has' | 'list' | 'delete'>
  /** Further assertions after the operations failed. */
  check?: (t: Test, target: ArchiveTarget) => void
  /** What every operation's message must say. */
  says?: RegExp
}

function archiveConformance (t: Test, name: string, setup: (t: Test) => Promise<Backend>, unreachable: Unreachable[]): void {
  t.test(`${name}: put/get round trip`, async t => {
    const b = await setup(t)
    const target = b.make()
    const big = rng.bytes(3 * MiB + 123)
    await target.put('seg-000000000001.ldarch', big)
    t.ok((await target.get('seg-000000000001.ldarch')).equals(big), 'a few MiB of random bytes come back intact')
    await target.put('empty', Buffer.alloc(0))
    t.equal((await target.get('empty')).length, 0, 'an empty object')
    await target.put('one', Buffer.from([7]))
    t.same([...await target.get('one')], [7], 'a one-byte object')
    const again = b.make()
    t.ok((await again.get('seg-000000000001.ldarch')).equals(big), 'another target over the same storage reads it')
    t.same(await b.raw(), ['empty', 'one', 'seg-000000000001.ldarch'], 'no temporary objects are left behind')
  })

  t.test(`${name}: getRange reads a range, short at the end, none past it`, async t => {
    const b = await setup(t)
    const target = b.make()
    if (!target.getRange) return t.pass('this backend has no ranged get (it is optional)')
    const big = rng.bytes(2 * MiB + 77)
    await target.put('ranged', big)
    t.ok((await target.getRange('ranged', 0, 4096)).equals(big.subarray(0, 4096)), 'from the start')
    t.ok((await target.getRange('ranged', MiB + 5, 70_000)).equals(big.subarray(MiB + 5, MiB + 5 + 70_000)), 'from the middle')
    t.ok((await target.getRange('ranged', big.length - 10, 4096)).equals(big.subarray(big.length - 10)), 'short at the end')
    t.equal((await target.getRange('ranged', big.length + 10, 4096)).length, 0, 'none past the end')
    await rejectsCode(t, target.getRange('no-such', 0, 10), 'NOT_FOUND', 'a missing name')
  })

  t.test(`${name}: has, list, delete`, async t => {
    const b = await setup(t)
    const target = b.make()
    t.same(await target.list(), [], 'an empty target lists nothing')
    for (const n of ['b-2', 'a-1', 'b-1', 'c.x_y']) await target.put(n, Buffer.from(n))
    t.same(await target.list(), ['a-1', 'b-1', 'b-2', 'c.x_y'], 'list is sorted')
    t.same(await target.list('b-'), ['b-1', 'b-2'], 'list by prefix')
    t.same(await target.list('zz'), [], 'a prefix matching nothing')
    t.equal(await target.has('a-1'), true, 'has a published object')
    t.equal(await target.has('a-2'), false, 'has not a missing one')
    await target.delete('b-1')
    t.equal(await target.has('b-1'), false, 'deleted')
    t.same(await target.list(), ['a-1', 'b-2', 'c.x_y'], 'list after delete')
    await target.delete('b-1')
    t.pass('deleting a missing name is not an error')
    await rejectsCode(t, target.get('b-1'), 'NOT_FOUND', 'get of a deleted name')
  })

  t.test(`${name}: overwrite replaces the whole object`, async t => {
    const b = await setup(t)
    const target = b.make()
    await target.put('x', rng.bytes(MiB))
    const second = rng.bytes(1000)
    await target.put('x', second)
    t.ok((await target.get('x')).equals(second), 'the second put wins, with its own length')
    t.same(await target.list(), ['x'], 'one object')
    t.same(await b.raw(), ['x'], 'nothing else in storage')
  })

  t.test(`${name}: missing names and bad names`, async t => {
    const b = await setup(t)
    const target = b.make()
    const err = await rejectsCode(t, target.get('nothing-here'), 'NOT_FOUND', 'get of a missing name')
    t.match(err?.message ?? '', /nothing-here/, 'the message names the object')
    t.equal(await target.has('nothing-here'), false, 'has is false')
    for (const bad of ['', '../x', 'a/b', '.hidden', 'x.tmp-123', 'sp ace', 'x'.repeat(201)]) {
      await rejectsCode(t, target.put(bad, Buffer.from('x')), 'BAD_ARGUMENT', `put ${JSON.stringify(bad.slice(0, 12))}`)
      await rejectsCode(t, target.get(bad), 'BAD_ARGUMENT', `get ${JSON.stringify(bad.slice(0, 12))}`)
    }
    await rejectsCode(t, target.list('a/'), 'BAD_ARGUMENT', 'list with a prefix outside the name rules')
    t.same(await b.raw(), [], 'refused names touched nothing')
  })

  t.test(`${name}: an upload killed halfway publishes nothing`, async t => {
    const b = await setup(t)
    const old = rng.bytes(64 * 1024)
    await b.make().put('x', old)
    const crashing = b.make({ failAfterTmpWrite: true })
    const err = await rejectsCode(t, crashing.put('x', rng.bytes(2 * MiB)), 'IO', 'put with failAfterTmpWrite')
    t.match(err?.message ?? '', /injected fault/, 'says it was injected')
    await rejectsCode(t, crashing.put('y', rng.bytes(MiB)), 'IO', 'put of a new name with failAfterTmpWrite')
    const target = b.make()
    t.ok((await target.get('x')).equals(old), 'the old object is intact under its name')
    t.equal(await target.has('y'), false, 'no object under the new name')
    await rejectsCode(t, target.get('y'), 'NOT_FOUND', 'get of the never-published name')
    t.same(await target.list(), ['x'], 'list shows only published objects')
    const raw = await b.raw()
    t.equal(raw.filter(n => n.includes('.tmp-')).length, 2, 'the temporary objects a crash leaves are there, ignored', { raw })
    const fresh = rng.bytes(5000)
    await target.put('y', fresh)
    t.ok((await target.get('y')).equals(fresh), 'a later put of the same name works')
  })

  t.test(`${name}: put verifies what was stored`, async t => {
    const b = await setup(t)
    const old = rng.bytes(10_000)
    await b.make().put('x', old)
    const damaging = b.make({ corruptTmpWrite: true })
    await rejectsCode(t, damaging.put('x', rng.bytes(MiB)), 'CORRUPT', 'put of an object damaged on the way')
    await rejectsCode(t, damaging.put('y', rng.bytes(1000)), 'CORRUPT', 'put of a new name damaged on the way')
    const target = b.make()
    t.ok((await target.get('x')).equals(old), 'the old object is intact')
    t.equal(await target.has('y'), false, 'nothing published under the new name')
    t.same(await b.raw(), ['x'], 'the damaged temporary objects were removed')
  })

  t.test(`${name}: a damaged archived object is CORRUPT`, async t => {
    const b = await setup(t)
    const target = b.make()
    const segment = segmentLike(2 * MiB)
    await target.put('seg-1', await encodeArchive(segment))
    t.ok((await decodeArchive(await target.get('seg-1'))).equals(segment), 'intact before the damage')
    await b.damage('seg-1')
    await rejectsCode(t, (async () => await decodeArchive(await target.get('seg-1')))(), 'CORRUPT', 'get + decode after a byte flip in storage')
    await target.put('seg-2', rng.bytes(100_000)) // garbage under the name, put through the target
    await rejectsCode(t, (async () => await decodeArchive(await target.get('seg-2')))(), 'CORRUPT', 'get + decode of garbage')
  })

  for (const u of unreachable) {
    t.test(`${name}: unreachable: ${u.label}`, async t => {
      const target = await u.make(t)
      if (target === undefined) return
      const ops = {
        put: async () => await target.put('x', Buffer.from('data')),
        get: async () => await target.get('x'),
        has: async () => await target.has('x'),
        list: async () => await target.list(),
        delete: async () => await target.delete('x')
      }
      for (const op of u.ops ?? ['put', 'get', 'has', 'list', 'delete'] as const) {
        const started = Date.now()
        const err = await rejectsCode(t, ops[op](), 'IO', op)
        const ms = Date.now() - started
        t.ok(ms < FAIL_FAST_MS, `${op} failed in ${ms} ms, no hang`)
        t.notMatch(err?.message ?? '', /\n/, `${op}: a one-line message`)
        if (u.says !== undefined) t.match(err?.message ?? '', u.says, `${op}: says ${String(u.says)}`)
        t.comment(`${op}: ${err?.message ?? ''}`)
      }
      u.check?.(t, target)
      await target.close()
    })
  }
}

// ---------------------------------------------------------------------------------------------
// Backend: a directory.

function tmpDir (t: Test, label: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-archive-${label}-`))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function flipFileByte (file: string): Promise<void> {
  const data = fs.readFileSync(file)
  const at = Math.floor(data.length / 2)
  data[at] ^= 0x01
  fs.writeFileSync(file, data)
}

archiveConformance(t, 'dir', async t => {
  const dir = tmpDir(t, 'dir')
  return {
    name: 'dir',
    make: faults => new DirTarget(dir, { faults }),
    raw: async () => fs.readdirSync(dir).sort(),
    damage: async name => await flipFileByte(path.join(dir, name))
  }
}, [
  {
    label: 'the directory was removed',
    make: async t => {
      const dir = tmpDir(t, 'gone')
      const target = new DirTarget(dir)
      await target.put('before', Buffer.from('x'))
      fs.rmSync(dir, { recursive: true })
      return target
    },
    check: (t, target) => t.notOk(fs.existsSync((target as DirTarget).dir), 'the missing directory was not recreated')
  },
  {
    label: 'a path under a file',
    make: async t => {
      const file = path.join(tmpDir(t, 'file'), 'plain-file')
      fs.writeFileSync(file, 'not a directory')
      return new DirTarget(path.join(file, 'archive'))
    }
  },
  {
    label: 'the target is a file',
    make: async t => {
      const file = path.join(tmpDir(t, 'file'), 'plain-file')
      fs.writeFileSync(file, 'not a directory')
      return new DirTarget(file)
    }
  },
  {
    label: 'a read-only file system',
    ops: ['put'],
    make: async t => {
      const dir = tmpDir(t, 'ro')
      try {
        await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', dir])
      } catch (err) {
        t.pass('read-only file system', { skip: `cannot mount a read-only tmpfs here (needs root): ${String((err as Error).message).split('\n')[0]}` })
        return undefined
      }
      t.teardown(async () => { await run('umount', [dir]) })
      return new DirTarget(dir)
    }
  }
])

// ---------------------------------------------------------------------------------------------
// Backend: S3, on two real servers on 127.0.0.1, one of each per file, one prefix per test:
// s3rver (in process, objects as files) and a Ceph object gateway (radosgw over a one-node
// cluster, started from Debian's packages: test/helpers/ceph.ts).

interface S3Service {
  name: string
  bucket: string
  settings: S3Settings
  /** Flips one byte of the stored bytes of `key` behind the server's back, keeping its metadata. */
  flip: (key: string) => Promise<void>
  /** Settings whose requests the server refuses for their credentials, with the error expected. */
  refused: Array<{ label: string, settings: S3Settings }>
  /** Why the server cannot page a listing, when it cannot. */
  noPaging?: string
  stop?: () => Promise<void>
}

function rawClient (settings: S3Settings): S3Client {
  const r = resolveS3Settings('test', settings, {})
  return new S3Client({
    endpoint: r.endpoint,
    region: r.region,
    forcePathStyle: true,
    credentials: { accessKeyId: r.accessKeyId, secretAccessKey: r.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED'
  })
}

function s3Target (t: Test, bucket: string, prefix: string, settings: S3Settings, faults?: ArchiveFaults): ArchiveTarget {
  const target = new S3Target(bucket, prefix, resolveS3Settings('test', settings, {}), { faults })
  t.teardown(async () => await target.close())
  return target
}

function s3Conformance (t: Test, start: Promise<S3Service>, label: string): void {
  let prefixes = 0
  archiveConformance(t, label, async t => {
    const s = await start
    const prefix = `conformance/t${++prefixes}`
    const client = rawClient(s.settings)
    t.teardown(() => client.destroy())
    return {
      name: label,
      make: faults => s3Target(t, s.bucket, prefix, s.settings, faults),
      raw: async () => {
        const out = await client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: `${prefix}/` }))
        return (out.Contents ?? []).map(o => (o.Key ?? '').slice(prefix.length + 1)).sort()
      },
      damage: async name => await s.flip(`${prefix}/${name}`)
    }
  }, [
    // Client-side failures: the same whatever the server, so run once.
    ...(label !== 's3rver' ? [] : [{
      label: 'nothing listens on the endpoint',
      says: /endpoint unreachable \(ECONNREFUSED\)/,
      make: async t => s3Target(t, 'logdisk-archive', 'p', {
        ...(await start).settings, endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 2, connectionTimeoutMs: 1000
      })
    }, {
      label: 'the endpoint accepts connections and never answers',
      says: /endpoint unreachable/,
      make: async t => {
        const silent = await startSilentServer()
        t.teardown(silent.stop)
        return s3Target(t, 'logdisk-archive', 'p', {
          ...(await start).settings, endpoint: silent.endpoint, maxAttempts: 2, connectionTimeoutMs: 1000, socketTimeoutMs: 700
        })
      }
    }] satisfies Unreachable[]),
    {
      label: 'the bucket does not exist',
      says: /bucket no-such-bucket does not exist/,
      make: async t => s3Target(t, 'no-such-bucket', 'p', (await start).settings)
    },
    ...['the access key is refused', 'the secret key is wrong'].map(which => ({
      label: which,
      says: /access denied/,
      make: async (t: Test) => {
        const refused = (await start).refused.find(r => r.label === which)
        if (refused === undefined) {
          t.pass(which, { skip: `${label} does not check this` })
          return undefined
        }
        return s3Target(t, 'logdisk-archive', 'p', refused.settings)
      }
    }))
  ])

  t.test(`${label}: an object stored by someone else is returned as is; its damage shows in decode`, async t => {
    const s = await start
    const client = rawClient(s.settings)
    t.teardown(() => client.destroy())
    const target = s3Target(t, s.bucket, 'foreign', s.settings)
    const archive = await encodeArchive(segmentLike(256 * 1024))
    archive[archive.length - 10] ^= 0x40
    await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: 'foreign/seg-9', Body: archive }))
    t.ok((await target.get('seg-9')).equals(archive), 'no sha256 metadata: get returns the bytes')
    await rejectsCode(t, decodeArchive(await target.get('seg-9')), 'CORRUPT', 'decode')
    await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: 'foreign/seg-9.tmp-abc', Body: 'x' }))
    await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: 'foreign/sub/seg-1', Body: 'x' }))
    t.same(await target.list(), ['seg-9'], 'list skips temporary objects and deeper keys')
  })

  t.test(`${label}: list pages through more than one page of keys, skipping temporary objects and deeper keys`, async t => {
    const s = await start
    if (s.noPaging !== undefined) {
      t.pass('paging', { skip: s.noPaging })
      return
    }
    const client = rawClient(s.settings)
    t.teardown(() => client.destroy())
    // 1000 keys is S3's (and radosgw's) page size: 1010 names, plus 101 temporary objects and
    // 101 deeper keys interleaved, so pages hold names, skipped keys and common prefixes.
    const names = Array.from({ length: 1010 }, (_, i) => `obj-${String(i).padStart(5, '0')}`)
    const keys = [
      ...names.map(n => `paged/${n}`),
      ...names.filter((_, i) => i % 10 === 3).map(n => `paged/${n}.tmp-abcdef`),
      ...names.filter((_, i) => i % 10 === 5).map(n => `paged/${n}/deeper`)
    ]
    for (let i = 0; i < keys.length; i += 32) {
      await Promise.all(keys.slice(i, i + 32).map(async key => await client.send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: key }))))
    }
    const target = s3Target(t, s.bucket, 'paged', s.settings)
    const listed = await target.list()
    t.equal(listed.length, names.length, `${listed.length} names listed`)
    t.same(listed, names, 'every name once, sorted, nothing else')
    t.same(await target.list('obj-0100'), names.filter(n => n.startsWith('obj-0100')), 'a prefix within the last page')
  })

  t.test(`${label}: a 64 MiB segment-sized object round trips`, async t => {
    const s = await start
    if (label === 's3rver') {
      t.pass('64 MiB', { skip: 'on the real engine only (RADOS stripes it in 4 MiB objects); s3rver stores a file' })
      return
    }
    const target = s3Target(t, s.bucket, 'big', s.settings)
    const data = rng.bytes(64 * MiB)
    await target.put('seg-big', data)
    const back = await target.get('seg-big')
    t.equal(back.length, data.length, 'its length')
    t.ok(back.equals(data), 'its bytes')
  })

  t.test(`${label}: the raw flip of a published object fails get itself with CORRUPT`, async t => {
    const s = await start
    const target = s3Target(t, s.bucket, 'flip', s.settings)
    await target.put('x', rng.bytes(50_000))
    await s.flip('flip/x')
    const err = await rejectsCode(t, target.get('x'), 'CORRUPT', 'get checks the sha256 metadata')
    t.match(err?.message ?? '', /checksum/, 'says which check failed')
  })
}

const S3RVER: Promise<S3Service> = startS3Server().then(s => ({
  name: 's3rver',
  bucket: s.bucket,
  settings: s.settings,
  flip: async key => await flipFileByte(s.objectFile(key)),
  // s3rver refuses an unknown access key but does not check signatures.
  refused: [{ label: 'the access key is refused', settings: { ...s.settings, accessKeyId: 'NO-SUCH-KEY' } }],
  // Measured: every truncated listing is a 500, because s3rver 3.7 makes continuation tokens
  // with DES, which Node 20's OpenSSL 3 refuses ("digital envelope routines::unsupported").
  noPaging: 's3rver 3.7 cannot page listings on Node 20 (DES continuation tokens; OpenSSL 3 refuses DES)',
  stop: s.stop
}))
t.teardown(async () => { await (await S3RVER).stop?.() })
s3Conformance(t, S3RVER, 's3rver')

const CEPH: Promise<S3Service> = (async () => {
  const g = await startCeph()
  t.teardown(g.stop)
  t.comment(`ceph: radosgw answering in ${g.startSeconds.toFixed(1)} s`)
  const bucket = 'logdisk-archive'
  await g.createBucket(bucket)
  return {
    name: 'ceph',
    bucket,
    settings: g.settings,
    flip: async key => {
      const { data, metadata } = await g.rawGet(bucket, key)
      data[Math.floor(data.length / 2)] ^= 0x01
      await g.rawPut(bucket, key, data, metadata)
    },
    refused: [
      { label: 'the access key is refused', settings: { ...g.settings, accessKeyId: 'NO-SUCH-KEY' } },
      { label: 'the secret key is wrong', settings: { ...g.settings, secretAccessKey: 'wrong-secret' } }
    ]
  }
})()
CEPH.catch(() => undefined) // each test awaits it and fails with its error
s3Conformance(t, CEPH, 'ceph')

// ---------------------------------------------------------------------------------------------
// parseTarget

t.test('parseTarget', async t => {
  const env = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'KEYID42', AWS_SECRET_ACCESS_KEY: 'SECRET42', AWS_REGION: 'eu-west-1' }
  const dir = parseTarget('/var/tmp/archive', env)
  t.ok(dir instanceof DirTarget, '/abs/dir is a directory')
  t.equal(dir.describe(), 'archive directory /var/tmp/archive')
  t.equal(parseTarget('/var/tmp/replica', env, { role: 'replica' }).describe(), 'replica directory /var/tmp/replica', 'a replica is named one')
  const s3replica = parseTarget('s3://my-bucket/r', env, { role: 'replica' })
  t.equal(s3replica.describe(), 'replica s3://my-bucket/r at http://127.0.0.1:9')
  await s3replica.close()
  t.throws(() => parseTarget('relative/dir', env, { role: 'replica' }), /^replica target relative\/dir: a directory target must be an absolute path/)
  const url = parseTarget('file:///var/tmp/my%20archive', env)
  t.ok(url instanceof DirTarget && url.dir === '/var/tmp/my archive', 'file:///abs/dir is a directory, decoded')
  const s3 = parseTarget('s3://my-bucket/some/prefix/', env)
  t.ok(s3 instanceof S3Target, 's3:// is S3')
  t.equal(s3.describe(), 'archive s3://my-bucket/some/prefix at http://127.0.0.1:9', 'describe names bucket, prefix and endpoint')
  t.notMatch(s3.describe(), /KEYID42|SECRET42/, 'and no credentials')
  await s3.close()
  const s3env = parseTarget('s3://my-bucket', { ...env, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:10' }) as S3Target
  t.equal(s3env.describe(), 'archive s3://my-bucket/ at http://127.0.0.1:10', 'AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL')
  await s3env.close()
  const s3opt = parseTarget('s3://my-bucket/p', env, { s3: { endpoint: 'http://127.0.0.1:11' } })
  t.match(s3opt.describe(), /127\.0\.0\.1:11/, 'options win over the environment')
  await s3opt.close()
  const aws = parseTarget('s3://my-bucket/p', { AWS_ACCESS_KEY_ID: 'KEYID42', AWS_SECRET_ACCESS_KEY: 'SECRET42' })
  t.equal(aws.describe(), 'archive s3://my-bucket/p in AWS region us-east-1', 'without an endpoint: AWS')
  await aws.close()

  const bad: Array<[string, NodeJS.ProcessEnv]> = [
    ['', env], ['relative/dir', env], ['./dir', env], ['file://host/dir', env], ['http://x/y', env],
    ['s3://', env], ['s3://ab', env], ['s3://bucket_name!/p', env], ['s3://bucket/a/../b', env],
    ['s3://bucket/p?x=1', env], ['s3://bucket/p', {}], ['s3://bucket/p', { ...env, AWS_ENDPOINT_URL: 'ftp://x' }]
  ]
  for (const [spec, e] of bad) {
    try {
      parseTarget(spec, e)
      t.fail(`${spec}: accepted`)
    } catch (err) {
      t.ok(isLogdiskError(err, 'BAD_ARGUMENT'), `${JSON.stringify(spec)} -> BAD_ARGUMENT: ${(err as Error).message}`)
      t.notMatch((err as Error).message, /\n/, 'one line')
    }
  }
})

// ---------------------------------------------------------------------------------------------
// The codec.

/** Rewrites a header field and recomputes the header CRC, as a newer or buggy writer would. */
function reheader (archive: Buffer, edit: (header: Buffer) => void): Buffer {
  const out = Buffer.from(archive)
  edit(out)
  out.writeUInt32LE(crc32c(out.subarray(0, 57)), 57)
  return out
}

t.test('codec: round trips', async t => {
  for (const codec of [ArchiveCodec.gzip, ArchiveCodec.brotli]) {
    for (const [label, data] of [
      ['empty', Buffer.alloc(0)],
      ['one byte', Buffer.from([42])],
      ['random', rng.bytes(MiB + 7)],
      ['segment-like', segmentLike(2 * MiB)]
    ] as Array<[string, Buffer]>) {
      const archive = await encodeArchive(data, codec)
      const header = readArchiveHeader(archive)
      t.equal(header.codec, codec)
      t.equal(header.originalBytes, data.length)
      t.equal(header.compressedBytes, archive.length - ARCHIVE_HEADER_BYTES)
      t.ok((await decodeArchive(archive)).equals(data), `codec ${codec}: ${label} round trips`)
    }
  }
  const zeros = Buffer.alloc(4 * MiB)
  t.ok((await encodeArchive(zeros)).length < 64 * 1024, 'zeros compress (default codec)')
  t.equal(readArchiveHeader(await encodeArchive(zeros)).codec, ArchiveCodec.brotli, 'the default codec is brotli')
  await rejectsCode(t, encodeArchive(zeros, 9 as ArchiveCodec), 'BAD_ARGUMENT', 'encode with an unknown codec')
})

t.test('codec: every kind of damage is CORRUPT, with its own message', async t => {
  const data = segmentLike(512 * 1024)
  for (const codec of [ArchiveCodec.gzip, ArchiveCodec.brotli]) {
    const good = await encodeArchive(data, codec)
    const cases: Array<[string, Buffer, RegExp]> = [
      ['empty', Buffer.alloc(0), /truncated: 0 bytes/],
      ['shorter than the header', good.subarray(0, 40), /shorter than the 61-byte header/],
      ['body cut short', good.subarray(0, good.length - 100), /truncated: the header declares/],
      ['header only', good.subarray(0, ARCHIVE_HEADER_BYTES), /truncated: the header declares/],
      ['trailing bytes', Buffer.concat([good, Buffer.from('extra')]), /5 unexpected bytes/],
      ['bad magic', Buffer.concat([Buffer.from('LDARCH9\n'), good.subarray(8)]), /bad magic/],
      ['not an archive', Buffer.from('x'.repeat(100)), /bad magic/],
      ['a flipped header byte', (() => { const b = Buffer.from(good); b[12] ^= 1; return b })(), /header checksum mismatch/],
      ['a flipped header CRC', (() => { const b = Buffer.from(good); b[58] ^= 1; return b })(), /header checksum mismatch/],
      ['unknown codec', reheader(good, h => { h[8] = 7 }), /unknown codec 7/],
      ['codec 0', reheader(good, h => { h[8] = 0 }), /unknown codec 0/],
      ['the other codec', reheader(good, h => { h[8] = codec === 1 ? 2 : 1 }), /data is damaged|decompress|checksum/],
      ['a flipped body byte', (() => { const b = Buffer.from(good); b[ARCHIVE_HEADER_BYTES + Math.floor((b.length - ARCHIVE_HEADER_BYTES) / 2)] ^= 0x10; return b })(), /damaged|decompress|checksum mismatch/],
      ['a smaller declared length', reheader(good, h => { h.writeBigUInt64LE(BigInt(data.length - 1), 9) }), /decompresses to more than/],
      ['a larger declared length', reheader(good, h => { h.writeBigUInt64LE(BigInt(data.length + 1), 9) }), /decompressed to \d+ bytes, the header declares/],
      ['an absurd declared length', reheader(good, h => { h.writeBigUInt64LE(2n ** 62n, 9) }), /larger than this process can hold/],
      ['a wrong sha256', reheader(good, h => { h[30] ^= 1 }), /content checksum mismatch/]
    ]
    for (const [label, buf, message] of cases) {
      const err = await rejectsCode(t, decodeArchive(buf), 'CORRUPT', `codec ${codec}: ${label}`)
      t.match(err?.message ?? '', message, `codec ${codec}: ${label}: says so`)
    }
  }
})
