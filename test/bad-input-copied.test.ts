// Bad-input matrix (issue 10): every command against a copied store (cp -a). A copy reads,
// and refuses to be changed until adopted.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, must } from './helpers/cli'
import { COMMANDS, cli, freshStore, newOut, refused, sameTrees, snapshotTrees, succeeded, unmountIfMounted, type Ctx, matrixFile } from './helpers/matrix'

const skip = canMount()
const m = matrixFile('copied', skip)

t.test('a copied store (cp -a)', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'copy-case')
  fs.mkdirSync(dir)
  const original = await freshStore(m.fx, path.join(dir, 'A'))
  const copy = path.join(dir, 'B')
  await must('cp', '-a', original, copy)
  const c: Ctx = { store: copy, fx: m.fx, out: newOut(dir), mnt: path.join(dir, 'mnt') }
  for (const cmd of COMMANDS) {
    const meantToWrite = cmd.name === 'adopt'
    const before = snapshotTrees(meantToWrite ? [original] : [original, copy])
    const r = await cli(cmd.args(c))
    if (meantToWrite) succeeded(t, r, cmd.name)
    else if (cmd.reads) succeeded(t, r, cmd.name, new RegExp(`^logdisk: warning: ${copy} is a copy of the store at ${original} \\(same identity\\); read-only commands work, others are refused until: logdisk adopt ${copy}`))
    else refused(t, r, new RegExp(`^logdisk: ${copy} is a copy of the store at ${original} \\(same identity [0-9a-f-]+\\); a copy must get its own identity before it is changed or mounted: logdisk adopt ${copy}`), cmd.name)
    sameTrees(t, before, cmd.name)
  }
  t.not(JSON.parse(fs.readFileSync(path.join(copy, 'store.json'), 'utf8')).uuid, JSON.parse(fs.readFileSync(path.join(original, 'store.json'), 'utf8')).uuid, 'adopt gave the copy its own uuid')
  succeeded(t, await cli(['snapshot', copy, '--name', 'mine']), 'once adopted, the copy takes writes')
  succeeded(t, await cli(['verify', copy]), 'and verifies')
  succeeded(t, await cli(['verify', original]), 'the original verifies')
})

