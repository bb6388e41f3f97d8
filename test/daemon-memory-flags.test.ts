// The mount daemon runs with the V8 heap flags that keep its peak RSS down (issue 11;
// src/daemon/memory-flags.ts says what each cut): the started process carries them, Node
// accepts them (the mount comes up), and LOGDISK_DAEMON_NODE_FLAGS replaces them.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS, applyRuntimeHeapFlags, daemonEnv, daemonNodeFlags } from '../src/daemon/memory-flags'
import { canMount, cleanup, daemonPid, logdisk, must, run, CLI, tmpDir } from './helpers/cli'

const skip = canMount()

t.test('the flag list and its override', async t => {
  t.same(daemonNodeFlags({}), [...DAEMON_NODE_FLAGS])
  t.ok(DAEMON_NODE_FLAGS.some(f => /^--heap-growing-percent=\d+$/.test(f)), 'sets the heap growing factor')
  t.same(daemonNodeFlags({ LOGDISK_DAEMON_NODE_FLAGS: '' }), [], 'empty: none')
  t.same(daemonNodeFlags({ LOGDISK_DAEMON_NODE_FLAGS: ' --max-semi-space-size=2  --expose-gc ' }), ['--max-semi-space-size=2', '--expose-gc'])
  t.same(applyRuntimeHeapFlags(['--heap-growing-percent=50'], {}), [], 'nothing to set when the command line has it')
  t.same(applyRuntimeHeapFlags([], { LOGDISK_DAEMON_NODE_FLAGS: '' }), [], 'nothing to set when switched off')
})

t.test('node starts with the flags (a misspelled V8 flag makes it exit with "bad option")', async t => {
  const r = await run(process.execPath, [...DAEMON_NODE_FLAGS, '-e', 'process.stdout.write("ok")'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'ok')
  const bad = await run(process.execPath, ['--heap-growing-percnt=50', '-e', '0'])
  t.not(bad.code, 0, 'the check would see a misspelling')
})

t.test('the malloc settings and their override', async t => {
  const env = daemonEnv({ PATH: '/bin' })
  for (const item of DAEMON_MALLOC_ENV) t.equal(`${item.split('=')[0]}=${env[item.split('=')[0]]}`, item)
  t.equal(env.PATH, '/bin', 'the rest of the environment is kept')
  t.equal(daemonEnv({ MALLOC_ARENA_MAX: '4' }).MALLOC_ARENA_MAX, '4', 'a variable already set wins')
  t.same(daemonEnv({ LOGDISK_DAEMON_MALLOC_ENV: '' }), { LOGDISK_DAEMON_MALLOC_ENV: '' }, 'empty: none')
  t.equal(daemonEnv({ LOGDISK_DAEMON_MALLOC_ENV: 'MALLOC_TOP_PAD_=0' }).MALLOC_TOP_PAD_, '0')
  t.throws(() => daemonEnv({ LOGDISK_DAEMON_MALLOC_ENV: 'MALLOC_ARENA_MAX' }), /LOGDISK_DAEMON_MALLOC_ENV: "MALLOC_ARENA_MAX" is not NAME=VALUE/)
})

/** The daemon's command line and environment, as /proc shows them. */
async function daemonStarted (t: Test, env: Record<string, string | undefined>): Promise<{ argv: string[], environ: string[] }> {
  const dir = tmpDir('daemon-flags')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const r = await run(process.execPath, [CLI, 'mount', store, mnt], { env: env as Record<string, string> })
  t.equal(r.code, 0, `mounted: ${r.stderr}`)
  const argv = fs.readFileSync(`/proc/${daemonPid(store)}/cmdline`, 'utf8').split('\0').filter(Boolean)
  const environ = fs.readFileSync(`/proc/${daemonPid(store)}/environ`, 'utf8').split('\0').filter(Boolean)
  // The mount works through the daemon: Node took the flags.
  const img = path.join(mnt, 'current.img')
  fs.writeFileSync(img, Buffer.alloc(4096, 7), { flag: 'r+' })
  const back = Buffer.alloc(4096)
  const fd = fs.openSync(img, 'r'); fs.readSync(fd, back, 0, 4096, 0); fs.closeSync(fd)
  t.ok(back.equals(Buffer.alloc(4096, 7)), 'a block written through the mount reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  return { argv, environ }
}

t.test('mount starts the daemon with the flags, before the script, and the malloc settings', { skip }, async t => {
  const { argv, environ } = await daemonStarted(t, { LOGDISK_DAEMON_NODE_FLAGS: undefined, LOGDISK_DAEMON_MALLOC_ENV: undefined, MALLOC_ARENA_MAX: undefined, MALLOC_MMAP_THRESHOLD_: undefined })
  const script = argv.findIndex(a => a.endsWith('main.js'))
  t.ok(script > 0, argv.join(' '))
  t.same(argv.slice(1, script), [...DAEMON_NODE_FLAGS], 'node <flags> main.js mount ...')
  t.ok(argv.includes('--foreground'))
  for (const item of DAEMON_MALLOC_ENV) t.ok(environ.includes(item), `the daemon's environment has ${item}`)
})

t.test('LOGDISK_DAEMON_NODE_FLAGS="" and LOGDISK_DAEMON_MALLOC_ENV="" start it without them', { skip }, async t => {
  const { argv, environ } = await daemonStarted(t, { LOGDISK_DAEMON_NODE_FLAGS: '', LOGDISK_DAEMON_MALLOC_ENV: '', MALLOC_ARENA_MAX: undefined, MALLOC_MMAP_THRESHOLD_: undefined })
  const script = argv.findIndex(a => a.endsWith('main.js'))
  t.same(argv.slice(1, script), [], argv.join(' '))
  t.same(environ.filter(e => e.startsWith('MALLOC_')), [], 'no malloc settings')
})
