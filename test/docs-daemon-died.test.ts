// docs/CLI.md ("Mounted and unmounted stores") said a command sent to a daemon that dies while
// it runs "goes on by itself on the unmounted store"; it exits 1 with "the mount daemon (pid N)
// died during <op>; it did not finish" (src/cli/on-store.ts, daemonDied; helper-85, 2026-12-07).
// The page must say what happens, in the words the command prints. (The behaviour itself:
// test/bad-input-daemon.test.ts.)
import fs from 'node:fs'
import t from 'tap'

t.test('CLI.md says what a command does when its daemon dies, in the words it prints', async t => {
  const page = fs.readFileSync('docs/CLI.md', 'utf8')
  const start = page.indexOf('## Mounted and unmounted stores')
  const section = page.slice(start, page.indexOf('\n## ', start + 1)).replace(/\s+/g, ' ')
  t.ok(start >= 0, 'the section is there')
  t.notMatch(section, /goes on by itself/, 'no longer says the command goes on by itself')
  const source = fs.readFileSync('src/cli/on-store.ts', 'utf8')
  const said = /`the mount daemon \(pid \$\{daemon\.pid\}\) died during \$\{op\}`/.test(source) && /\$\{what\}; it did not finish/.test(source)
  t.ok(said, 'on-store.ts still says "the mount daemon (pid N) died during <op>; it did not finish"')
  t.match(section, 'the mount daemon (pid N) died during <op>; it did not finish', 'the page quotes it')
  t.match(section, /exits 1/, 'and says the command exits 1')
  for (const op of ['archive', 'pool remove', 'pool repair', 'restore']) t.match(section, `\`${op}\``, `names ${op}`)
})
