import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, must, tmpDir } from './helpers/cli'
import { MIB, damageSegmentCopy, mirroredStore, sha } from './helpers/mirrored-store'

/**
 * adopt takes a copied store's segments home from the original's pool volumes, one copy each.
 * With two copies of every segment (mirror=2) it took the copy on the first volume, unread:
 * when that one was damaged, the original still read right (mirrored reads go around it) but
 * the adopted copy failed its checksum (found by a hostile test, 2026-12-06). It must take a
 * copy that passes.
 */

t.test('adopt of a mirrored copy takes the intact copy of a damaged segment', { timeout: 180_000 }, async t => {
  const { dir, store, v1, v2, image } = await mirroredStore('adopt-mirror')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const want = sha(image)
  t.ok(damageSegmentCopy(v1) !== undefined && fs.readdirSync(v2, { recursive: true }).map(String).some(f => f.endsWith('seg-000000000001.log')), 'segment 1 has a copy on each volume; the first is damaged')

  const original = path.join(dir, 'orig.img')
  const r0 = await logdisk('restore', store, '--at', 'a', '--out', original)
  t.equal(r0.code, 0, `the original restores around the damaged copy: ${r0.stderr}`)
  t.equal(sha(fs.readFileSync(original)), want, 'with the bytes written')

  const copy = path.join(dir, 'copy')
  await must('cp', '-a', store, copy)
  const adopted = await logdisk('adopt', copy)
  t.equal(adopted.code, 0, `adopt: ${adopted.stderr}`)
  const out = path.join(dir, 'copy.img')
  const r1 = await logdisk('restore', copy, '--at', 'a', '--out', out)
  t.equal(r1.code, 0, `the adopted copy restores: ${r1.stderr}`)
  if (r1.code === 0) t.equal(sha(fs.readFileSync(out)), want, 'with the bytes written')
  const verify = await logdisk('verify', copy)
  t.notMatch(verify.stdout + verify.stderr, /fails its checksum/, 'and no block of it fails its checksum')
})

/**
 * A store made with create --pool gives its own segments/ no capacity. adopt of a copy of it
 * drops the original's volumes and takes the segments home into segments/, which then had to
 * take new ones too: the first write failed with ENOSPC (found by a hostile test, 2026-12-06).
 */
t.test('a copy of a store made on pool volumes takes writes after adopt', { timeout: 180_000 }, async t => {
  const dir = tmpDir('adopt-pool')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M', '--pool', path.join(dir, 'v1'))
  const first = crypto.randomBytes(6 * MIB)
  {
    const { store: s } = await openStore(store)
    try { await s.write(0, first); await s.flush() } finally { await s.close() }
  }
  const copy = path.join(dir, 'copy')
  await must('cp', '-a', store, copy)
  const adopted = await logdisk('adopt', copy)
  t.equal(adopted.code, 0, `adopt: ${adopted.stderr}`)
  t.match(adopted.stdout, /segments is its only pool volume now and takes new segments/, 'adopt says the copy takes segments in its own directory')
  const more = crypto.randomBytes(8 * MIB)
  const { store: s } = await openStore(copy)
  try {
    await s.write(16 * MIB, more)
    await s.flush()
    t.equal(sha(await s.read(0, 6 * MIB)), sha(first), 'what the original wrote reads back')
    t.equal(sha(await s.read(16 * MIB, 8 * MIB)), sha(more), 'and so does what the adopted copy wrote')
  } finally {
    await s.close()
  }
})

/**
 * A copy of a mirror=2 store on two pool volumes: adopt drops both (they are the original's)
 * and the copy holds its segments in segments/ alone. It kept mirror=2, and a write needing a
 * new segment failed with ENOSPC (helper-84). adopt lowers mirror to what the pool holds and says so.
 */
t.test('adopt of a copy of a mirror=2 store lowers mirror to the volumes it keeps', { timeout: 180_000 }, async t => {
  const { dir, store, image } = await mirroredStore('adopt-mirror-lower')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const copy = path.join(dir, 'copy')
  await must('cp', '-a', store, copy)
  const adopted = await logdisk('adopt', copy)
  t.equal(adopted.code, 0, `adopt: ${adopted.stderr}`)
  t.match(adopted.stdout, new RegExp(`; mirror lowered from 2 to 1: its pool holds 1 volume now \\(add one with logdisk pool add, then logdisk policy set ${copy} mirror=2\\)`), 'adopt says it lowered mirror')
  t.equal(adopted.stdout.trim().split('\n').length, 1, 'in its one line')
  t.equal(JSON.parse(fs.readFileSync(path.join(copy, 'policy.json'), 'utf8')).mirror, 1, 'the copy\'s policy says mirror=1')
  t.equal(JSON.parse(fs.readFileSync(path.join(store, 'policy.json'), 'utf8')).mirror, 2, 'the original keeps mirror=2')
  const more = crypto.randomBytes(16 * MIB)
  const { store: s } = await openStore(copy)
  try {
    await s.write(20 * MIB, more)
    await s.flush()
    t.equal(sha(await s.read(0, 12 * MIB)), sha(image.subarray(0, 12 * MIB)), 'what the original wrote reads back')
    t.equal(sha(await s.read(20 * MIB, 16 * MIB)), sha(more), 'and the adopted copy takes new segments')
  } finally {
    await s.close()
  }
})
