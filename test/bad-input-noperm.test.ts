// Bad-input matrix (issue 10): every command as a user who may only read the store. Read-only
// commands work and write nothing; the others say why not.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, must, run } from './helpers/cli'
import { COMMANDS, cli, freshStore, newOut, refused, sameTrees, snapshotTrees, succeeded, type Ctx, matrixFile } from './helpers/matrix'

const skip = canMount() || (fs.existsSync('/usr/sbin/runuser') || fs.existsSync('/sbin/runuser') ? false : 'needs runuser')
const USER = 'nobody'
const m = matrixFile('noperm', skip)

t.test(`as ${USER}, who may only read the store`, { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'noperm-case')
  fs.mkdirSync(dir)
  const store = await freshStore(m.fx, path.join(dir, 'store'))
  const outs = path.join(dir, 'outs')
  fs.mkdirSync(outs)
  fs.chmodSync(outs, 0o1777)
  await must('chmod', '-R', 'a+rX', m.root) // readable (segments are made 0600), not writable
  const c: Ctx = { store, fx: m.fx, out: newOut(outs), mnt: path.join(outs, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees([store, m.fx.template])
    const r = await cli(cmd.args(c), { user: USER })
    if (cmd.reads) succeeded(t, r, cmd.name)
    else refused(t, r, new RegExp(`^logdisk: ${store} is not writable by user ${USER} \\(EACCES on ${store}\\): this command writes to the store; run it as the store's owner`), cmd.name)
    sameTrees(t, before, cmd.name)
  }
  const restored = path.join(outs, 'check.img')
  succeeded(t, await cli(['restore', store, '--at', 's2', '--out', restored], { user: USER }), 'restore as the reader')
  t.equal(fs.statSync(restored).uid, Number((await must('id', '-u', USER)).trim()), 'the output belongs to the reader')
  const ref = path.join(dir, 'ref.img')
  succeeded(t, await cli(['restore', store, '--at', 's2', '--out', ref]), 'restore as m.root')
  t.equal((await run('cmp', [restored, ref])).code, 0, 'the reader restored the same image as m.root')
  refused(t, await cli(['create', path.join(dir, 'new'), '--size', '16M'], { user: USER }), new RegExp(`cannot create a store at ${dir}/new: ${dir} is not writable by this user \\(EACCES\\)`), 'create in a directory the user cannot write')
})

