// Copies removed from under the store (rm -rf of a volume's segment directory, a file deleted)
// while the volume's directory stayed: `pool list` and `status` said all was well (the index
// still named the copies; the degraded count read the index alone) and only `verify` knew; a
// read-only command that noticed printed "logdisk: error:" lines and tried to remove the
// copies it could not (a hostile test, helper-61). They now list the volumes' directories.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, tmpDir } from './helpers/cli'

const MIB = 1024 * 1024

interface PoolList { volumes: Array<{ dir: string, state: string, segments: number }>, warnings: string[] }

async function writeSome (store: string, bytes: number): Promise<void> {
  const { store: s } = await openStore(store)
  try { await s.write(0, crypto.randomBytes(bytes)); await s.flush() } finally { await s.close() }
}

t.test('copies lost from a volume that is still there are counted by pool list and status', { timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-lost-copies')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const [v1, v2, v3] = ['v1', 'v2', 'v3'].map(v => path.join(dir, v))
  t.equal((await logdisk('create', store, '--size', '64M', '--segment-size', '2M', '--pool', v1)).code, 0)
  for (const v of [v2, v3]) t.equal((await logdisk('pool', 'add', store, v)).code, 0)
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0)
  await writeSome(store, 20 * MIB)
  t.equal((await logdisk('pool', 'repair', store)).code, 0)
  const list = async (): Promise<PoolList & { stderr: string }> => {
    const r = await logdisk('pool', 'list', store, '--json')
    return { ...JSON.parse(r.stdout) as PoolList, stderr: r.stderr }
  }
  const before = await list()
  t.same(before.warnings, [], 'two copies of every segment: no warning')
  const onV2 = before.volumes.find(v => v.dir === v2)!.segments
  t.ok(onV2 >= 10, `v2 holds copies of ${onV2} segments`)

  const uuid = JSON.parse(fs.readFileSync(path.join(store, 'store.json'), 'utf8')).uuid as string
  fs.rmSync(path.join(v2, uuid), { recursive: true })
  const after = await list()
  t.match(after.warnings.join('\n'), new RegExp(`^${onV2} segment\\(s\\) have fewer than 2 copies .*run logdisk pool repair`, 'm'), 'every segment that lost its copy on v2 is counted')
  t.notMatch(after.stderr, /error:/, 'and nothing is called an error: the command works, the store is degraded')
  const status = await logdisk('status', store)
  t.match(status.stdout, new RegExp(`warning\\s+${onV2} segment\\(s\\) have fewer than 2 copies`), 'status says it too')
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, repair.stderr)
  t.same((await list()).warnings, [], 'repaired: no warning')
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout}`)

  // A volume missing only as a volume (its marker gone; its files there, and read): no copy
  // is lost (helper-63: "fewer than 2 copies" was said, and repair made none).
  const marker = path.join(v2, '.logdisk-volume.json')
  const kept = fs.readFileSync(marker)
  fs.rmSync(marker)
  const markerGone = await list()
  t.notMatch(markerGone.warnings.join('\n'), /fewer than 2 copies/, 'its copies are there: none counted lost')
  t.match(markerGone.warnings.join('\n'), new RegExp(`pool volume ${v2} is missing \\(its \\.logdisk-volume\\.json is gone\\): its segments still read; no new ones go there`), 'the volume is missing as a volume, its segments read')
  fs.writeFileSync(marker, kept)

  // One copy (mirror=1): a segment file deleted is a segment with no copy left.
  t.equal((await logdisk('policy', 'set', store, 'mirror=1')).code, 0)
  const store1 = path.join(dir, 's1')
  const w = path.join(dir, 'w')
  t.equal((await logdisk('create', store1, '--size', '16M', '--segment-size', '2M', '--pool', w)).code, 0)
  await writeSome(store1, 6 * MIB)
  const uuid1 = JSON.parse(fs.readFileSync(path.join(store1, 'store.json'), 'utf8')).uuid as string
  fs.rmSync(path.join(w, uuid1, 'seg-000000000001.log'))
  const r = await logdisk('pool', 'list', store1, '--json')
  t.match((JSON.parse(r.stdout) as PoolList).warnings.join('\n'), /^1 segment\(s\) have no copy left on any pool volume \(removed or lost from under the store\): reads of blocks only they hold fail; logdisk verify names them$/m, 'a lost segment of a single-copy store is said')

  // A filesystem unmounted under a volume (an empty directory, no marker): its segments have
  // no copy left, though the wording said they still read (helper-63).
  const store2 = path.join(dir, 's2')
  const [x1, x2] = ['x1', 'x2'].map(v => path.join(dir, v))
  t.equal((await logdisk('create', store2, '--size', '32M', '--segment-size', '2M', '--pool', x1, '--pool', x2)).code, 0)
  t.equal((await logdisk('pool', 'add', store2, x1, '--capacity', '8M')).code, 0)
  await writeSome(store2, 14 * MIB)
  const before2 = JSON.parse((await logdisk('pool', 'list', store2, '--json')).stdout) as PoolList
  const onX1 = before2.volumes.find(v => v.dir === x1)!.segments
  t.ok(onX1 > 0 && before2.volumes.find(v => v.dir === x2)!.segments > 0, `segments on both volumes (${onX1} on x1)`)
  fs.renameSync(x1, `${x1}.unmounted`)
  fs.mkdirSync(x1)
  const gone = JSON.parse((await logdisk('pool', 'list', store2, '--json')).stdout) as PoolList
  t.match(gone.warnings.join('\n'), new RegExp(`pool volume ${x1} is missing \\(its \\.logdisk-volume\\.json is gone\\): ${onX1} segment\\(s\\) on it cannot be read; no new ones go there`), 'its segments cannot be read, and it says how many')
})

// A store no command has written to has its current segment only in memory (a read-only open
// makes no file): `status` and `pool list` of every new store warned that a segment had no
// copy left (helper-69).
t.test('a new store warns of no lost segment', { timeout: 60_000 }, async t => {
  const dir = tmpDir('pool-lost-fresh')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  t.equal((await logdisk('create', store, '--size', '64M')).code, 0)
  for (const args of [['status', store], ['pool', 'list', store]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 0, `${args.join(' ')} works`)
    t.notMatch(r.stdout + r.stderr, /warning/, `${args.join(' ')} warns of nothing (${(r.stdout + r.stderr).trim().split('\n').filter(l => /warning/.test(l)).join('; ')})`)
  }
})
