// Small things from issue 12: mount failures say why on the command line (not only in
// daemon.log), and a number that is not one is called so.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, isMounted, logdisk, run, tmpDir } from './helpers/cli'

t.setTimeout(300_000)

t.test('mount refuses a folder that is not empty, and a file, in one line; nothing is mounted', { skip: canMount() }, async t => {
  const dir = tmpDir('small')
  t.teardown(() => cleanup(dir))
  const store = path.join(dir, 'store')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const full = path.join(dir, 'full')
  fs.mkdirSync(full)
  fs.writeFileSync(path.join(full, 'keep-me'), 'x')
  const r = await logdisk('mount', store, full)
  t.equal(r.code, 1)
  t.equal(r.stderr, `logdisk: cannot mount at ${full}: the folder is not empty (1 entry: keep-me); the images would hide them: mount on an empty folder\n`)
  t.notOk(isMounted(full))
  t.notOk(fs.existsSync(path.join(store, 'daemon.json')), 'no daemon was started')
  const file = path.join(dir, 'file')
  fs.writeFileSync(file, '')
  const f = await logdisk('mount', store, file, '--json')
  t.equal(f.code, 1)
  t.same(JSON.parse(f.stderr), { error: { code: 'BAD_ARGUMENT', message: `cannot mount at ${file}: it is a file, not a folder` } })
})

t.test('--id abc says it is not a number', async t => {
  const dir = tmpDir('small-id')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const r = await logdisk('snapshot', store, '--id', 'abc')
  t.equal(r.code, 1)
  t.equal(r.stderr, 'logdisk: --id "abc" is not a whole number above 0 (like 3)\n')
  t.equal(JSON.parse((await logdisk('snapshots', store, '--json')).stdout).length, 0, 'no snapshot was made')
})

t.test('shell completion for bash (and zsh through bashcompinit) from the command list', async t => {
  const dir = tmpDir('small-completion')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const bash = await logdisk('completion', 'bash')
  t.equal(bash.code, 0)
  fs.writeFileSync(path.join(dir, 'logdisk.bash'), bash.stdout)
  const complete = async (...words: string[]): Promise<string[]> => {
    const script = `source ${path.join(dir, 'logdisk.bash')}; COMP_WORDS=(logdisk ${words.map(w => `'${w}'`).join(' ')}); COMP_CWORD=${words.length}; _logdisk; printf '%s\\n' "\${COMPREPLY[@]}"`
    const r = await run('bash', ['-c', script])
    return r.stdout.split('\n').filter(Boolean).sort()
  }
  t.same(await complete('po'), ['policy', 'pool'], 'commands')
  t.same(await complete('pool', ''), ['add', 'list', 'remove', 'repair'], 'subcommands')
  t.ok((await complete('mount', 's', 'm', '--')).includes('--metrics'), 'options of the command typed')
  t.ok((await complete('pool', 'add', '--')).includes('--capacity'), 'options of a subcommand')
  const zsh = await logdisk('completion', 'zsh')
  t.match(zsh.stdout, /^#compdef logdisk\n[\s\S]*bashcompinit[\s\S]*complete -o filenames -F _logdisk logdisk/)
  const bad = await logdisk('completion', 'fish')
  t.equal(bad.code, 1)
  t.match(bad.stderr, /no completion for "fish"/)
})

t.test('the man page (docs/logdisk.1, make man) has every command', async t => {
  const page = fs.readFileSync('docs/logdisk.1', 'utf8').replace(/\\-/g, '-')
  const r = await logdisk('completion', 'bash', '--json')
  const commands = [...JSON.parse(r.stdout).script.matchAll(/^ {4}"([a-z -]+)"\) subs="" ?;/gm)].map(m => m[1])
  t.ok(commands.length >= 30, `${commands.length} commands`)
  for (const c of commands) t.match(page, `.B logdisk ${c} `, `man page: ${c}`)
})
