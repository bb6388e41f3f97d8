import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, must, tmpDir } from './helpers/cli'
import { archivedStore } from './helpers/archived-store'

/**
 * verify checks that the history the store calls restorable still has its bytes: a version the
 * index keeps that compaction freed from a segment's local file must be in that segment's whole
 * copy on backing storage. verify read only what the log holds, so a store whose archived copy
 * was lost (or one recovered from a replica that had shipped punched segments: a hostile test,
 * helper-52) said ok while restores of those points failed or read other bytes.
 */
const MIB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t.test('verify names history whose freed versions backing storage no longer holds', { timeout: 180_000 }, async t => {
  const dir = tmpDir('verify-history')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const archive = path.join(dir, 'arch')
  const away = path.join(dir, 'away')
  fs.mkdirSync(archive)
  fs.mkdirSync(away)
  const cli = path.resolve('dist/src/cli/main.js')
  await must(process.execPath, cli, 'create', store, '--size', '64M', '--segment-size', '4M')
  await must(process.execPath, cli, 'policy', 'set', store, `archive.target=${archive}`)
  const first = crypto.randomBytes(6 * MIB)
  {
    const { store: s } = await openStore(store)
    try {
      await s.write(0, first)
      await s.syncPoint('p1')
      await s.write(0, crypto.randomBytes(6 * MIB))
      await s.syncPoint('p2')
      await s.write(16 * MIB, crypto.randomBytes(8 * MIB))
      await s.flush()
    } finally {
      await s.close()
    }
  }
  t.equal((await logdisk('compact', store)).code, 0, 'compaction archives segments whole and frees superseded versions locally')
  const clean = await logdisk('verify', store)
  t.equal(clean.code, 0, `verify is clean: ${clean.stdout}${clean.stderr}`)
  const out = path.join(dir, 'p1.img')
  t.equal((await logdisk('restore', store, '--at', 'p1', '--out', out)).code, 0)
  t.equal(sha(fs.readFileSync(out).subarray(0, first.length)), sha(first), 'p1 restores from the archived copies')

  // The whole copies of segments still local (their freed versions read from there) go.
  const local = new Set(fs.readdirSync(path.join(store, 'segments')))
  const moved = fs.readdirSync(archive).filter(n => [...local].some(l => n.endsWith(`.${l.replace(/\.log$/, '.ldarch')}`)))
  t.ok(moved.length > 0, `archived copies of local segments: ${moved.join(', ')}`)
  for (const n of moved) fs.renameSync(path.join(archive, n), path.join(away, n))
  fs.rmSync(path.join(store, 'cache'), { recursive: true, force: true })
  const lost = await logdisk('verify', store, '--json')
  t.not(lost.code, 0, 'verify fails')
  const report = JSON.parse(lost.stdout) as { problems: string[] }
  t.match(report.problems.join('\n'), /^history: \d+ version\(s\) the index keeps \(the oldest: block \d+ at sequence \d+\) were freed from seg-\d+\.log, whose whole copy backing storage does not hold: restores of the points they belong to fail or read other bytes$/m, 'naming the segment whose freed history is gone')
  t.ok(report.problems.length <= moved.length + 2, `one problem per segment, not per block (${report.problems.length})`)
  const gone = await logdisk('restore', store, '--at', 'p1', '--out', path.join(dir, 'p1-again.img'))
  t.not(gone.code, 0, 'and a restore of p1 fails, as verify said')

  for (const n of moved) fs.renameSync(path.join(away, n), path.join(archive, n))
  const back = await logdisk('verify', store)
  t.equal(back.code, 0, `the copies back, verify is clean: ${back.stdout}${back.stderr}`)
})

// verify read an archived segment from the store's cache, so a segment backing storage had
// lost said ok while a copy was cached; once the cache went (every mount empties it), that
// history could not be restored (a hostile test, helper-57).
t.test('verify names an archived segment backing storage lost, even while a copy is cached', { timeout: 180_000 }, async t => {
  const { dir, store, archive } = await archivedStore('verify-archive-cached')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const { store: s } = await openStore(store)
  try {
    t.ok((await s.verify()).ok, 'verify is clean (and fetched the archived segments into the cache)')
    const gone = fs.readdirSync(archive).filter(n => n.endsWith('.ldarch'))[0]
    t.ok(gone, `an archived object: ${gone}`)
    fs.rmSync(path.join(archive, gone))
    const r = await s.verify()
    t.notOk(r.ok, 'verify fails with the object gone, its copy cached')
    t.match(r.problems.join('\n'), /archived, but backing storage no longer holds it/, r.problems[0] ?? '')
  } finally {
    await s.close()
  }
})
