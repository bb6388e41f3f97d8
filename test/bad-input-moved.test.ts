// Bad-input matrix (issue 10): every command against a moved store (mv): it just works, and
// read-only commands leave it byte-identical.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, must, tmpDir } from './helpers/cli'
import { COMMANDS, cli, freshStore, makeFixture, newOut, refused, sameTrees, snapshotTrees, succeeded, unmountIfMounted, type Ctx, type Fixture } from './helpers/matrix'

const skip = canMount()
t.setTimeout(900_000) // a loaded machine runs each CLI start slowly; every run has its own 120 s bound
let fx: Fixture
let root: string

t.before(async () => {
  if (skip) return
  root = tmpDir('matrix-moved')
  fx = await makeFixture(root)
})
t.teardown(async () => { if (root) await cleanup(root) })

t.test('a moved store (mv)', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(root, 'move-case')
  fs.mkdirSync(dir)
  const first = await freshStore(fx, path.join(dir, 'M1'))
  const store = path.join(dir, 'M2')
  fs.renameSync(first, store)
  const c: Ctx = { store, fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
  for (const cmd of COMMANDS) {
    const before = snapshotTrees(cmd.reads ? [store, fx.template] : [fx.template])
    const r = await cli(cmd.args(c))
    await unmountIfMounted(c.mnt)
    succeeded(t, r, cmd.name)
    sameTrees(t, before, cmd.name)
  }
  t.equal(JSON.parse(fs.readFileSync(path.join(store, 'identity.json'), 'utf8')).path, fs.realpathSync(store), 'the identity record follows the store')
  succeeded(t, await cli(['verify', store]), 'verify is clean')
})
