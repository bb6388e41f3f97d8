// Bad-input matrix (issue 10): every command against a store whose store.json was edited
// (uuid, geometry).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, tmpDir } from './helpers/cli'
import { COMMANDS, cli, freshStore, makeFixture, newOut, refused, sameTrees, snapshotTrees, succeeded, type Ctx, type Fixture } from './helpers/matrix'

const skip = canMount()
t.setTimeout(900_000) // a loaded machine runs each CLI start slowly; every run has its own 120 s bound
let fx: Fixture
let root: string

t.before(async () => {
  if (skip) return
  root = tmpDir('matrix-edited')
  fx = await makeFixture(root)
})
t.teardown(async () => { if (root) await cleanup(root) })

t.test('a store whose store.json was edited', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(root, 'edited-case')
  fs.mkdirSync(dir)
  const store = await freshStore(fx, path.join(dir, 'store'))
  const file = path.join(store, 'store.json')
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8'))
  for (const [key, value, why] of [
    ['uuid', '00000000-1111-2222-3333-444444444444', /store.json was edited or copied in; put back "uuid": /],
    ['segmentBytes', 4 * 1024 * 1024, /store.json was edited; put back "segmentBytes": 2097152/]
  ] as const) {
    fs.writeFileSync(file, JSON.stringify({ ...cfg, [key]: value }, null, 2))
    const c: Ctx = { store, fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
    for (const cmd of COMMANDS) {
      const before = snapshotTrees([store, fx.template])
      const r = await cli(cmd.args(c))
      refused(t, r, why, `${key} edited: ${cmd.name}`)
      sameTrees(t, before, `${key} edited: ${cmd.name}`)
    }
  }
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2))
  succeeded(t, await cli(['verify', store]), 'with store.json put back, verify is clean')
})
