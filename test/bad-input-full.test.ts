// Bad-input matrix (issue 10): every command on a full disk. Read-only commands work and write
// nothing; the others say why not.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, must, run } from './helpers/cli'
import { COMMANDS, cli, freshStore, newOut, refused, sameTrees, snapshotTrees, succeeded, type Ctx, matrixFile } from './helpers/matrix'

const skip = canMount() || (fs.existsSync('/usr/sbin/runuser') || fs.existsSync('/sbin/runuser') ? false : 'needs runuser')
const USER = 'nobody'
const m = matrixFile('full', skip)

t.test('on a full disk', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'full-case')
  const disk = path.join(dir, 'disk')
  fs.mkdirSync(disk, { recursive: true })
  await must('mount', '-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', disk)
  const store = await freshStore(m.fx, path.join(disk, 'store'))
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'fill')}`, 'bs=1M', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'fill2')}`, 'bs=4k', 'status=none'])
  t.equal(fs.statfsSync(disk).bavail, 0, 'the disk is full')
  const c: Ctx = { store, fx: m.fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees([store, m.fx.template])
    const r = await cli(cmd.args(c))
    if (cmd.reads) succeeded(t, r, cmd.name)
    else refused(t, r, new RegExp(`^logdisk: no space left on the filesystem of ${store} \\(0 B free; .*\\): free some space and retry`), cmd.name)
    sameTrees(t, before, cmd.name)
  }
  const before = snapshotTrees([disk])
  refused(t, await cli(['create', path.join(disk, 'new'), '--size', '16M']), new RegExp(`cannot create a store at ${disk}/new: no space left`), 'create on the full disk')
  sameTrees(t, before, 'create on the full disk')
  fs.rmSync(path.join(disk, 'fill'))
  succeeded(t, await cli(['snapshot', store, '--name', 'after']), 'with space again, a write works')
  succeeded(t, await cli(['verify', store]), 'and verify is clean')
})
