// The shared reproductions of data-loss defects (scripts/repro/, adapted from ../shared/repro/
// to today's modules) run on every `make test`: each exits 2 while its defect shows, 1 when it
// cannot run (an internal module moved under it, as happened once unnoticed), 0 otherwise.
// The originals in ../shared/repro run too, unchanged, when they are there (a clone on another
// machine has no ../shared), through scripts/repro/old-dist: the old module paths mapped onto
// today's dist/src.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { run } from './helpers/cli'
import { ROOT } from './helpers/paths'

t.setTimeout(300_000)

const scripts: Array<[string, string[], RegExp]> = [
  ['compact-concurrent-big.js', ['3'], /lost\/unreadable blocks: 0\b/],
  ['mirror-stale-first.js', [], /segment copy sizes now/],
  ['archived-flag-lost.js', [], /after archive: restore --at P ok, block 5 = A0/],
  ['horizon-rebuild.js', [], /^OK$/m],
  ['baseline-archive-restore.js', [], /block 5 at P: A OK/]
]

const SHARED = path.resolve(ROOT, '../shared/repro')
const OLD_DIST = path.join(ROOT, 'scripts/repro/old-dist')

for (const [script, args, says] of scripts) {
  t.test(`scripts/repro/${script} shows no defect`, async t => {
    const r = await run(process.execPath, [`scripts/repro/${script}`, ...args], { timeoutMs: 240_000 })
    t.equal(r.code, 0, `exit 0 (2: the defect shows; 1: it could not run)\n${r.stdout.slice(-1500)}${r.stderr.slice(-1500)}`)
    t.match(r.stdout, says)
  })
  const original = path.join(SHARED, script)
  t.test(`the original ../shared/repro/${script}, unchanged, shows no defect`, { skip: fs.existsSync(original) ? false : `${original} is not on this machine` }, async t => {
    const r = await run(process.execPath, [original, ...args], { timeoutMs: 240_000, env: { DIST: OLD_DIST } })
    t.equal(r.code, 0, `exit 0 (2: the defect shows; 1: it could not run)\n${r.stdout.slice(-1500)}${r.stderr.slice(-1500)}`)
    t.match(r.stdout, says)
  })
}
