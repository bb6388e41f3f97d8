import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { logdisk, tmpDir } from './helpers/cli'

const MIB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

/**
 * A garbled `.logdisk-volume.json` (a torn write by another tool, an editor) showed its volume
 * as missing "(the directory or its .logdisk-volume.json is gone): N segment(s) on it cannot be
 * read", while its segments read on; and `pool add` of the directory, the way to remake a
 * lost marker, failed on the garbled one, so the volume stayed missing for good. The warning
 * now says what is wrong and what to run; `pool add` sets the garbled marker aside and
 * remakes it under the id the store knows.
 */
t.test('a garbled volume marker: named as such, its segments read, pool add remakes it', { timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-garbled-marker')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 's')
  const v1 = path.join(dir, 'v1')
  t.equal((await logdisk('create', store, '--size', '64M', '--segment-size', '4M', '--pool', v1)).code, 0)
  const data = crypto.randomBytes(10 * MIB)
  const { store: s } = await openStore(store)
  try { await s.write(0, data); await s.flush(); await s.snapshot({ name: 'a' }) } finally { await s.close() }
  const list = async (): Promise<{ volumes: Array<{ dir: string, id: string, state: string, segments: number, capacityBytes: number }>, warnings: string[] }> => JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout)
  t.equal((await logdisk('pool', 'add', store, v1, '--capacity', '48M')).code, 0, 'a capacity declared in the marker')
  const before = (await list()).volumes.find(v => v.dir === v1)!
  t.equal(before.capacityBytes, 48 * MIB)
  t.ok(before.segments > 0 && before.state === 'assigned', `the volume holds segments (${before.segments})`)

  const marker = path.join(v1, '.logdisk-volume.json')
  fs.writeFileSync(marker, '{"id": "' + before.id.slice(0, 10)) // torn
  const garbled = await list()
  t.equal(garbled.volumes.find(v => v.dir === v1)!.state, 'missing', 'the volume is missing as a volume')
  t.match(garbled.warnings.join('\n'), `pool volume ${v1} is missing (its .logdisk-volume.json is unreadable (garbled); remake it with logdisk pool add ${store} ${v1}): its segments still read`, 'the warning says what is wrong and what to run')
  const out = path.join(dir, 'img')
  const restore = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(restore.code, 0, `its segments still read: ${restore.stderr}`)
  if (restore.code === 0) t.equal(sha(fs.readFileSync(out).subarray(0, data.length)), sha(data), 'the bytes written')

  const add = await logdisk('pool', 'add', store, v1)
  t.equal(add.code, 0, `pool add remakes the marker: ${add.stderr}`)
  t.match(add.stderr, /unreadable marker was set aside as .*\.logdisk-volume\.json\.unreadable-\d+; any capacity declared in it is lost, so the volume may fill its filesystem: give it again with --capacity SIZE/, 'pool add says the declared capacity is lost and how to give it again')
  t.not((await list()).volumes.find(v => v.dir === v1)!.capacityBytes, 48 * MIB, 'the capacity went with the garbled marker')
  const after = (await list()).volumes.find(v => v.dir === v1)!
  t.same({ id: after.id, state: after.state }, { id: before.id, state: 'assigned' }, 'under the id the store knows, assigned to it again')
  t.ok(fs.readdirSync(v1).some(n => n.startsWith('.logdisk-volume.json.unreadable-')), 'the garbled marker is set aside, not deleted')
  t.equal((await list()).warnings.length, 0, 'no warning left')
  const again = await logdisk('pool', 'add', store, v1, '--capacity', '48M')
  t.equal(again.stderr, '', 'given again, no warning')
  t.equal((await list()).volumes.find(v => v.dir === v1)!.capacityBytes, 48 * MIB, 'the capacity is back')
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout}${verify.stderr}`)

  // A marker that cannot be read is remade only for a directory the store lists: a garbled
  // marker of a directory it does not know is not its to replace.
  const other = path.join(dir, 'other')
  fs.mkdirSync(other)
  fs.writeFileSync(path.join(other, '.logdisk-volume.json'), 'garbage')
  const refused = await logdisk('pool', 'add', store, other)
  t.not(refused.code, 0, 'pool add of an unknown directory with a garbled marker is refused')
  t.match(refused.stderr, /unreadable \.logdisk-volume\.json/, 'naming the marker')
  t.equal(fs.readFileSync(path.join(other, '.logdisk-volume.json'), 'utf8'), 'garbage', 'and leaves it as it was')
})
