// Bad-input matrix (issue 10): every command against a moved store (mv): it just works, and
// read-only commands leave it byte-identical.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, must } from './helpers/cli'
import { COMMANDS, cli, freshStore, newOut, refused, sameTrees, snapshotTrees, succeeded, unmountIfMounted, type Ctx, matrixFile } from './helpers/matrix'

const skip = canMount()
const m = matrixFile('moved', skip)

t.test('a moved store (mv)', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'move-case')
  fs.mkdirSync(dir)
  const first = await freshStore(m.fx, path.join(dir, 'M1'))
  const store = path.join(dir, 'M2')
  fs.renameSync(first, store)
  const c: Ctx = { store, fx: m.fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees(cmd.reads ? [store, m.fx.template] : [m.fx.template])
    const r = await cli(cmd.args(c))
    await unmountIfMounted(c.mnt)
    succeeded(t, r, cmd.name)
    sameTrees(t, before, cmd.name)
  }
  t.equal(JSON.parse(fs.readFileSync(path.join(store, 'identity.json'), 'utf8')).path, fs.realpathSync(store), 'the identity record follows the store')
  succeeded(t, await cli(['verify', store]), 'verify is clean')
})
