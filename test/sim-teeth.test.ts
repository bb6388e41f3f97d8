// scripts/sim-teeth.mjs (`make teeth`) shows the simulation catches each data-loss defect again
// once its fix is taken back out. It edits a copy of src/ with exact text replacements, so a
// refactor that rewords a fix silently leaves nothing to revert; this keeps the list honest on
// every `make test` (three of six had gone stale once) without the 90 s the full run takes.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

type Revert = [file: string, fix: string, without: string]

// The list is an ES module shared with the script; a CommonJS build turns import() into
// require(), which cannot load one, so the import is made at run time.
const importEsm = new Function('p', 'return import(p)') as (p: string) => Promise<{ reverts: Record<string, Revert[]> }>
const root = path.resolve(__dirname, '..', '..')

t.test('every fix sim-teeth takes back out is still in src/, exactly once', async t => {
  const { reverts } = await importEsm(path.join(root, 'scripts', 'sim-teeth-reverts.mjs'))
  const names = Object.keys(reverts)
  t.ok(names.length >= 6, `${names.length} reverts listed`)
  for (const [name, edits] of Object.entries(reverts)) {
    t.ok(edits.length > 0, `${name}: at least one edit`)
    for (const [file, fix, without] of edits) {
      const text = fs.readFileSync(path.join(root, file), 'utf8')
      t.equal(text.split(fix).length - 1, 1, `${name}: ${file} holds "${fix.slice(0, 60)}" once`)
      t.not(fix, without, `${name}: the edit changes something`)
    }
  }
})
