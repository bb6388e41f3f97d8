// One directory under two names (a symlink) added to a pool counted as two volumes: pool list
// doubled its use, and mirror=2 kept both "copies" of every segment in one file (found by a
// hostile test, helper-42). It is refused, naming the volume it already is.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { cleanup, logdisk, tmpDir } from './helpers/cli'

t.test('pool add of a volume already in the pool under another name is refused; so is create --pool with both names', { timeout: 120_000 }, async t => {
  const root = tmpDir('pool-same-volume')
  t.teardown(() => cleanup(root))
  const store = path.join(root, 's')
  const q1 = path.join(root, 'q1')
  t.equal((await logdisk('create', store, '--size', '64M', '--segment-size', '4M', '--pool', q1)).code, 0)
  t.equal((await logdisk('pool', 'add', store, q1, '--capacity', '64M')).code, 0)
  fs.symlinkSync(q1, path.join(root, 'q1link'))
  const again = await logdisk('pool', 'add', store, path.join(root, 'q1link'), '--capacity', '64M')
  t.not(again.code, 0, 'refused')
  t.match(again.stderr, new RegExp(`^logdisk: ${root}/q1link is pool volume ${q1} under another name \\(the same directory, or the same \\.logdisk-volume\\.json\\): it is in the pool already\\n$`), 'one line naming the volume')
  const list = JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout) as { volumes: Array<{ dir: string }> }
  t.same(list.volumes.map(v => v.dir).filter(d => d !== path.join(store, 'segments')).sort(), [q1], 'the pool lists it once')

  const other = path.join(root, 's2')
  const b = path.join(root, 'b')
  fs.mkdirSync(b)
  fs.symlinkSync(b, path.join(root, 'blink'))
  const create = await logdisk('create', other, '--size', '64M', '--segment-size', '4M', '--pool', b, '--pool', path.join(root, 'blink'))
  t.not(create.code, 0, 'create --pool with two names of one directory is refused')
  t.match(create.stderr, /is pool volume .* under another name/)
  t.notOk(fs.existsSync(other), 'and leaves no store behind')
  t.same(fs.readdirSync(b), [], 'nor a volume marker')
})
