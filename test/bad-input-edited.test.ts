// Bad-input matrix (issue 10): every command against a store whose store.json was edited
// (uuid, geometry).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount } from './helpers/cli'
import { COMMANDS, cli, freshStore, newOut, refused, sameTrees, snapshotTrees, succeeded, type Ctx, matrixFile } from './helpers/matrix'

const skip = canMount()
const m = matrixFile('edited', skip)

t.test('a store whose store.json was edited', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'edited-case')
  fs.mkdirSync(dir)
  const store = await freshStore(m.fx, path.join(dir, 'store'))
  const file = path.join(store, 'store.json')
  const cfg = JSON.parse(fs.readFileSync(file, 'utf8'))
  for (const [key, value, why] of [
    ['uuid', '00000000-1111-2222-3333-444444444444', /store.json was edited or copied in; put back "uuid": /],
    ['segmentBytes', 4 * 1024 * 1024, /store.json was edited; put back "segmentBytes": 2097152/]
  ] as const) {
    fs.writeFileSync(file, JSON.stringify({ ...cfg, [key]: value }, null, 2))
    const c: Ctx = { store, fx: m.fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
    for (const cmd of COMMANDS) {
      const before = snapshotTrees([store, m.fx.template])
      const r = await cli(cmd.args(c))
      refused(t, r, why, `${key} edited: ${cmd.name}`)
      sameTrees(t, before, `${key} edited: ${cmd.name}`)
    }
  }
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2))
  succeeded(t, await cli(['verify', store]), 'with store.json put back, verify is clean')
})
