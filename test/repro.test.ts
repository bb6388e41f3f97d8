// The shared reproductions of data-loss defects (scripts/repro/, adapted from ../shared/repro/
// to today's modules) run on every `make test`: each exits 2 while its defect shows, 1 when it
// cannot run (an internal module moved under it, as happened once unnoticed), 0 otherwise.
import t from 'tap'
import { run } from './helpers/cli'

t.setTimeout(300_000)

const scripts: Array<[string, string[], RegExp]> = [
  ['compact-concurrent-big.js', ['3'], /lost\/unreadable blocks: 0\b/],
  ['mirror-stale-first.js', [], /segment copy sizes now/],
  ['archived-flag-lost.js', [], /after archive: restore --at P ok, block 5 = A0/],
  ['horizon-rebuild.js', [], /^OK$/m],
  ['baseline-archive-restore.js', [], /block 5 at P: A OK/]
]

for (const [script, args, says] of scripts) {
  t.test(`scripts/repro/${script} shows no defect`, async t => {
    const r = await run(process.execPath, [`scripts/repro/${script}`, ...args], { timeoutMs: 240_000 })
    t.equal(r.code, 0, `exit 0 (2: the defect shows; 1: it could not run)\n${r.stdout.slice(-1500)}${r.stderr.slice(-1500)}`)
    t.match(r.stdout, says)
  })
}
