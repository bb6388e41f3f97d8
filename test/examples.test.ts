// The README's walk-through must keep working exactly as written.
import t from 'tap'
import { canMount, cleanup, run, tmpDir } from './helpers/cli'

t.test('examples/walkthrough.sh runs end to end', { skip: canMount() }, async t => {
  const dir = tmpDir('walkthrough')
  t.teardown(() => cleanup(dir, t))
  const r = await run('bash', ['examples/walkthrough.sh', dir], { timeoutMs: 300_000 })
  t.equal(r.code, 0, `${r.stderr}\n--- stdout (end) ---\n${r.stdout.slice(-2000)}`)
  t.match(r.stdout, /all \d+ files read back identical/)
  t.match(r.stdout, /\nok\n/, 'verify is clean')
})
