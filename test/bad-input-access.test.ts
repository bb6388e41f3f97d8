// Bad-input matrix (issue 10), part 2: every command as a user who may only read the store,
// and on a full disk. Read-only commands work and write nothing; the others say why not.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, must, run, tmpDir } from './helpers/cli'
import { COMMANDS, cli, freshStore, makeFixture, newOut, refused, sameTrees, snapshotTrees, succeeded, type Ctx, type Fixture } from './helpers/matrix'

const skip = canMount() || (fs.existsSync('/usr/sbin/runuser') || fs.existsSync('/sbin/runuser') ? false : 'needs runuser')
const USER = 'nobody'
let fx: Fixture
let root: string

t.before(async () => {
  if (skip) return
  root = tmpDir('matrix-access')
  fx = await makeFixture(root)
})
t.teardown(async () => { if (root) await cleanup(root) })

t.test(`as ${USER}, who may only read the store`, { skip, timeout: 300_000 }, async t => {
  const dir = path.join(root, 'noperm-case')
  fs.mkdirSync(dir)
  const store = await freshStore(fx, path.join(dir, 'store'))
  const outs = path.join(dir, 'outs')
  fs.mkdirSync(outs)
  fs.chmodSync(outs, 0o1777)
  await must('chmod', '-R', 'a+rX', root) // readable (segments are made 0600), not writable
  const c: Ctx = { store, fx, out: newOut(outs), mnt: path.join(outs, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees([store, fx.template])
    const r = await cli(cmd.args(c), { user: USER })
    if (cmd.reads) succeeded(t, r, cmd.name)
    else refused(t, r, new RegExp(`^logdisk: ${store} is not writable by user ${USER} \\(EACCES on ${store}\\): this command writes to the store; run it as the store's owner`), cmd.name)
    sameTrees(t, before, cmd.name)
  }
  const restored = path.join(outs, 'check.img')
  succeeded(t, await cli(['restore', store, '--at', 's2', '--out', restored], { user: USER }), 'restore as the reader')
  t.equal(fs.statSync(restored).uid, Number((await must('id', '-u', USER)).trim()), 'the output belongs to the reader')
  const ref = path.join(dir, 'ref.img')
  succeeded(t, await cli(['restore', store, '--at', 's2', '--out', ref]), 'restore as root')
  t.equal((await run('cmp', [restored, ref])).code, 0, 'the reader restored the same image as root')
  refused(t, await cli(['create', path.join(dir, 'new'), '--size', '16M'], { user: USER }), new RegExp(`cannot create a store at ${dir}/new: ${dir} is not writable by this user \\(EACCES\\)`), 'create in a directory the user cannot write')
})

t.test('on a full disk', { skip, timeout: 300_000 }, async t => {
  const dir = path.join(root, 'full-case')
  const disk = path.join(dir, 'disk')
  fs.mkdirSync(disk, { recursive: true })
  await must('mount', '-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', disk)
  const store = await freshStore(fx, path.join(disk, 'store'))
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'fill')}`, 'bs=1M', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'fill2')}`, 'bs=4k', 'status=none'])
  t.equal(fs.statfsSync(disk).bavail, 0, 'the disk is full')
  const c: Ctx = { store, fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees([store, fx.template])
    const r = await cli(cmd.args(c))
    if (cmd.reads) succeeded(t, r, cmd.name)
    else refused(t, r, new RegExp(`^logdisk: no space left on the filesystem of ${store} \\(0 bytes free; .*\\): free some space and retry`), cmd.name)
    sameTrees(t, before, cmd.name)
  }
  const before = snapshotTrees([disk])
  refused(t, await cli(['create', path.join(disk, 'new'), '--size', '16M']), new RegExp(`cannot create a store at ${disk}/new: no space left`), 'create on the full disk')
  sameTrees(t, before, 'create on the full disk')
  fs.rmSync(path.join(disk, 'fill'))
  succeeded(t, await cli(['snapshot', store, '--name', 'after']), 'with space again, a write works')
  succeeded(t, await cli(['verify', store]), 'and verify is clean')
})
