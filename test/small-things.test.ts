// Small things from issue 12: mount failures say why on the command line (not only in
// daemon.log), and a number that is not one is called so.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { TEST_RUN_MARKER, canMount, cleanup, daemonPid, isMounted, logdisk, run, tmpDir } from './helpers/cli'

t.setTimeout(300_000)

t.test('mount refuses a folder that is not empty, and a file, in one line; nothing is mounted', { skip: canMount() }, async t => {
  const dir = tmpDir('small')
  t.teardown(() => cleanup(dir, t))
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
  const folder = path.join(dir, 'folder')
  fs.mkdirSync(path.join(folder, 'current.img'), { recursive: true })
  const d = await logdisk('mount', store, folder)
  t.equal(d.stderr, `logdisk: cannot mount at ${folder}: the folder is not empty (1 entry: current.img); the images would hide them: mount on an empty folder\n`, 'a folder named like an image is no stray image')
  const file = path.join(dir, 'file')
  fs.writeFileSync(file, '')
  const f = await logdisk('mount', store, file, '--json')
  t.equal(f.code, 1)
  t.same(JSON.parse(f.stderr), { error: { code: 'BAD_ARGUMENT', message: `cannot mount at ${file}: it is a file, not a folder` } })
})

// A daemon killed: its mount is detached (devfuse's watchdog), and a writer that opens
// <mnt>/current.img with O_CREAT (dd, cp) then writes a plain file beside the store. The next
// mount is refused because the folder is not empty; it says what that file is.
t.test('an image written into the folder after its daemon died: the next mount says it is not in any store', { skip: canMount(), timeout: 60_000 }, async t => {
  const dir = tmpDir('small-stray')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  process.kill(daemonPid(store), 'SIGKILL')
  const deadline = Date.now() + 20_000
  while (isMounted(mnt) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
  if (isMounted(mnt)) t.equal((await logdisk('unmount', mnt)).code, 0, 'the stale mount removed (fuse-native keeps it)')
  fs.writeFileSync(path.join(mnt, 'current.img'), Buffer.alloc(4096, 1)) // as dd of=<mnt>/current.img
  const r = await logdisk('mount', store, mnt)
  t.equal(r.code, 1, 'refused')
  t.equal(r.stderr, `logdisk: cannot mount at ${mnt}: the folder is not empty (1 entry: current.img); current.img is a plain file of this folder, not of a store: written while nothing was mounted here (after a daemon died?); what was written to it is not in any store: move it away; the images would hide them: mount on an empty folder\n`)
  t.notOk(isMounted(mnt), 'nothing mounted')
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

t.test('daemon.log is JSON lines only, stray text included, and rotated by size', { skip: canMount() }, async t => {
  const dir = tmpDir('small-log')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(mnt)
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  // Text no logger sees: process.stderr, raw writes to fd 2 and fd 1 (as libfuse or a child
  // process would make), then enough of it to rotate a 2 KiB log twice over.
  const preload = path.join(dir, 'stray.js')
  fs.writeFileSync(preload, `if (process.argv.includes('--foreground')) {
    process.stderr.write('plain text from process.stderr\\n')
    require('fs').writeSync(2, 'raw text on fd 2\\nits second line\\n')
    let n = 0
    const timer = setInterval(() => { require('fs').writeSync(1, 'filler ' + n + ' ' + 'x'.repeat(200) + '\\n'); if (++n >= 40) clearInterval(timer) }, 5)
    timer.unref()
  }\n`)
  const mount = await run(process.execPath, [path.resolve('dist/src/cli/main.js'), 'mount', store, mnt], { env: { NODE_OPTIONS: `--require ${preload}`, LOGDISK_LOG_SIZE: '2K', LOGDISK_LOG_KEEP: '2' } })
  t.equal(mount.code, 0, `mounted (${mount.stderr})`)
  const logs = (): string[] => fs.readdirSync(store).filter(f => f.startsWith('daemon.log')).sort()
  // Read between a rotation's rename and the new file's creation, daemon.log is briefly missing.
  const current = (): string => { try { return fs.readFileSync(path.join(store, 'daemon.log'), 'utf8') } catch { return '' } }
  for (let i = 0; i < 100 && !current().includes('filler 39 '); i++) await new Promise(resolve => setTimeout(resolve, 100))
  t.equal((await logdisk('unmount', mnt)).code, 0)
  await new Promise(resolve => setTimeout(resolve, 500)) // the writer ends with the daemon's pipe
  t.same(logs(), ['daemon.log', 'daemon.log.1', 'daemon.log.2'], 'rotated: the current log and LOGDISK_LOG_KEEP=2 older ones')
  const records: Array<Record<string, unknown>> = []
  for (const f of logs().reverse()) { // oldest first: daemon.log.2, daemon.log.1, daemon.log
    const text = fs.readFileSync(path.join(store, f), 'utf8')
    t.ok(text.endsWith('\n'), `${f} ends with a whole line`)
    for (const line of text.split('\n').filter(l => l !== '')) {
      try {
        records.push(JSON.parse(line))
      } catch {
        t.fail(`${f}: a line that is not JSON: ${line}`)
      }
    }
    t.ok(fs.statSync(path.join(store, f)).size < 4096, `${f} stays near LOGDISK_LOG_SIZE`)
  }
  // Any filler line, not the last one: with LOGDISK_LOG_KEEP=2 the file holding filler 39 is
  // rotated away when the daemon logs over 4 KiB after it (it failed so once in a full run).
  t.ok(records.some(r => r.stray === true && r.level === 50 && /^filler \d+ x+$/.test(String(r.msg))), 'stray text became JSON records')
  t.match(records[records.length - 1], { msg: 'unmounted' }, 'the daemon\'s own last line is there, last')
  const writers = (await run('pgrep', ['-f', `log-writer.js ${path.join(store, 'daemon.log')}`])).stdout.trim()
  t.equal(writers, '', 'the log writer exited with the daemon')
})

t.test('the log writer turns stray text into JSON and passes JSON lines as they are', async t => {
  const { toJsonLines } = require(path.resolve('dist/src/daemon/log-writer.js')) as typeof import('../src/daemon/log-writer')
  const json = '{"level":30,"msg":"mounted"}'
  t.same(toJsonLines(`${json}\nError: boom\n    at x (y.js:1)\n${json}\npart`, 7), {
    lines: [json, '{"level":50,"time":7,"stray":true,"msg":"Error: boom\\n    at x (y.js:1)"}', json],
    rest: 'part'
  }, 'consecutive stray lines stay one record; an unfinished line waits')
  t.same(toJsonLines('[1,2]\n\n', 7).lines, ['{"level":50,"time":7,"stray":true,"msg":"[1,2]"}'], 'JSON that is not an object is stray; empty lines go')
})

t.test('help text speaks to users: no seed, figure or claim numbers', async t => {
  const { buildProgram } = require(path.resolve('dist/src/cli/main.js')) as { buildProgram: () => import('commander').Command }
  const texts: string[] = []
  const walk = (cmd: import('commander').Command, prefix: string): void => {
    for (const c of cmd.commands) {
      texts.push(`${prefix}${c.name()}: ${c.description()}`)
      for (const o of c.options) texts.push(`${prefix}${c.name()} ${o.flags}: ${o.description}`)
      walk(c, `${prefix}${c.name()} `)
    }
  }
  walk(buildProgram(), '')
  t.ok(texts.length > 100, `${texts.length} descriptions`)
  for (const text of texts) t.notMatch(text, /\bseeds?\b|\bFig\.|\bcl\. ?\d|\b00[0-4]\b|\[00\d\d\]|getNextCriteria|executeSnapshot/, text)
})

t.test('sizes in messages have units', async t => {
  const dir = tmpDir('small-units')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const odd = await logdisk('create', path.join(dir, 'a'), '--size', '4097')
  t.equal(odd.code, 1)
  t.equal(odd.stderr, 'logdisk: size 4.0 KiB (4097 bytes) must be a positive multiple of the block size (4.0 KiB)\n')
  const seg = await logdisk('create', path.join(dir, 'b'), '--size', '16M', '--segment-size', '1M')
  t.equal(seg.code, 1)
  t.equal(seg.stderr, 'logdisk: segment size 1.0 MiB (1048576 bytes) must be between 1053760 bytes and 4 GiB for block size 4.0 KiB (the smallest in whole MiB: 2M)\n')
  const block = await logdisk('create', path.join(dir, 'c'), '--size', '16M', '--block-size', '3000')
  t.equal(block.stderr, 'logdisk: block size 2.9 KiB (3000 bytes) must be a power of two between 512 bytes and 1 MiB\n')
  const store = path.join(dir, 'd')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const shrink = await logdisk('resize', store, '--size', '12289')
  t.equal(shrink.stderr, 'logdisk: size 12.0 KiB (12289 bytes) must be a positive multiple of the block size (4.0 KiB)\n')

  // An edited store.json is named as such (helper-62: a string size was "not a multiple").
  const file = path.join(store, 'store.json')
  const config = JSON.parse(fs.readFileSync(file, 'utf8'))
  fs.writeFileSync(file, JSON.stringify({ ...config, sizeBytes: String(config.sizeBytes) }))
  t.equal((await logdisk('status', store)).stderr, `logdisk: ${file}: sizeBytes is "16777216", not a number; put back the value the store was made with\n`)
  fs.writeFileSync(file, JSON.stringify({ ...config, sizeBytes: -1 }))
  t.equal((await logdisk('status', store)).stderr, `logdisk: ${file}: size -1 bytes must be a positive multiple of the block size (4.0 KiB); put back the value the store was made with\n`)
  fs.writeFileSync(file, JSON.stringify(config))
  t.equal((await logdisk('status', store)).code, 0, 'put back, the store opens')
})

t.test('the test sweep leaves the mounts of a test run still going, and removes those of a run that ended', { skip: canMount() }, async t => {
  // Two `make test` runs in one checkout once swept each other's mounts mid-test.
  const dir = tmpDir('small-sweep')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  const otherRun = spawn('sleep', ['600'])
  t.teardown(() => { otherRun.kill() })
  // The directory and the daemon are the other run's.
  fs.writeFileSync(path.join(dir, TEST_RUN_MARKER), JSON.stringify({ run: String(otherRun.pid), repo: process.cwd() }))
  t.equal((await run(process.execPath, ['dist/src/cli/main.js', 'mount', store, mnt], { env: { LOGDISK_TEST_RUN: String(otherRun.pid) } })).code, 0)
  const sweep = async (): Promise<string> => {
    const r = await run(process.execPath, ['scripts/sweep-test-mounts.mjs', '--dry-run'], { env: { LOGDISK_TEST_RUN: String(process.pid) } })
    return r.stdout.split('\n').filter(l => l.includes(mnt)).join('\n')
  }
  t.equal(await sweep(), '', 'the other run goes on: its mount stays')
  otherRun.kill()
  await new Promise(resolve => otherRun.once('exit', resolve))
  t.match(await sweep(), `would run: umount -l ${mnt}`, 'the other run is gone: its mount is swept')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.notOk(isMounted(mnt))
})

t.test('the test sweep leaves a mount whose daemon a test of another run or checkout killed on purpose', { skip: canMount() }, async t => {
  // A helper's single-file run in another worktree swept, at its end, the dead daemon's mount
  // that test/signals.test.ts was about to unmount itself ("is not a logdisk mount").
  const dir = tmpDir('small-sweep-dead')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '16M')).code, 0)
  t.equal((await run(process.execPath, ['dist/src/cli/main.js', 'mount', store, mnt, '--transport', 'fuse-native'])).code, 0)
  process.kill(daemonPid(store), 'SIGKILL')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.ok(isMounted(mnt), 'a dead daemon leaves its mount (fuse-native)')
  const otherRun = spawn('sleep', ['600'])
  t.teardown(() => { otherRun.kill() })
  const mark = (runId: string, repo: string): void => fs.writeFileSync(path.join(dir, TEST_RUN_MARKER), JSON.stringify({ run: runId, repo }))
  const sweep = async (): Promise<string> => {
    const r = await run(process.execPath, ['scripts/sweep-test-mounts.mjs', '--dry-run'], { env: { LOGDISK_TEST_RUN: String(process.pid) } })
    return r.stdout.split('\n').filter(l => l.includes(mnt)).join('\n')
  }
  // A filesystem the test mounted in its directory (bad-input-full mounts a small tmpfs)
  // is swept with it, and left with it.
  const disk = path.join(dir, 'disk')
  fs.mkdirSync(disk)
  t.equal((await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', disk])).code, 0)
  t.teardown(() => run('umount', ['-l', disk]))
  const sweptDisk = async (): Promise<boolean> => (await run(process.execPath, ['scripts/sweep-test-mounts.mjs', '--dry-run'], { env: { LOGDISK_TEST_RUN: String(process.pid) } })).stdout.includes(`would run: umount -l ${disk}\n`)
  mark(String(otherRun.pid), process.cwd())
  t.notOk(await sweptDisk(), 'its tmpfs is left while that run goes on')
  t.equal(await sweep(), '', 'another run of this checkout still going: left alone')
  mark(String(process.pid), '/somewhere/else')
  t.equal(await sweep(), '', 'another checkout: left alone')
  mark(String(process.pid), process.cwd())
  t.match(await sweep(), `would run: umount -l ${mnt}`, 'this run (as the sweep sees it): swept')
  otherRun.kill()
  await new Promise(resolve => otherRun.once('exit', resolve))
  mark(String(otherRun.pid), process.cwd())
  t.match(await sweep(), `would run: umount -l ${mnt}`, 'a run that ended: swept')
  t.ok(await sweptDisk(), 'and its tmpfs with it')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.notOk(isMounted(mnt))
})
