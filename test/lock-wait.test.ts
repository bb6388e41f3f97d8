// Commands on an unmounted store wait for a lock another command holds (--wait SECONDS,
// default 5), and after the wait the error names the holder (issue 12).
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { logdisk, tmpDir } from './helpers/cli'

t.setTimeout(300_000)

const OPEN = path.resolve('dist/src/app/open.js')

/** Another process holding the store's lock (as a running command does) for `ms`, then releasing it. */
async function holdLock (store: string, ms: number): Promise<ChildProcess> {
  const script = `require(${JSON.stringify(OPEN)}).openStore(${JSON.stringify(store)}, { holder: 'logdisk compact' })
    .then(({ store }) => { console.log('held'); setTimeout(() => store.close().then(() => process.exit(0)), ${ms}) })`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', d => { if (String(d).includes('held')) resolve() })
    child.on('exit', code => reject(new Error(`the holder exited ${code} before it held the lock`)))
  })
  return child
}

t.test('--wait: wait for the lock, then fail naming the holder; 0 fails at once', async t => {
  const dir = tmpDir('lock-wait')
  const store = path.join(dir, 'store')
  t.equal((await logdisk('create', store, '--size', '16M', '--segment-size', '2M')).code, 0)
  const holder = await holdLock(store, 600_000)
  t.teardown(() => { holder.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }) })

  let started = Date.now()
  const waited = await logdisk('status', store, '--wait', '1.5', '--json')
  const tookMs = Date.now() - started
  t.equal(waited.code, 1, 'exit 1 after the wait')
  const e = JSON.parse(waited.stderr).error
  t.equal(e.code, 'STORE_LOCKED')
  t.equal(e.message, `store ${store} is in use by pid ${holder.pid} (logdisk compact); wait for it to finish, then try again (or stop it with kill ${holder.pid}: a command stopped part way loses no data) (waited 1.5 s for it; --wait SECONDS waits longer)`, 'names the holder and the wait')
  t.ok(tookMs >= 1500, `it waited (${tookMs} ms)`)

  started = Date.now()
  const now = await logdisk('snapshot', store, '--name', 'x', '--wait', '0')
  t.equal(now.code, 1)
  t.equal(now.stderr, `logdisk: store ${store} is in use by pid ${holder.pid} (logdisk compact); wait for it to finish, then try again (or stop it with kill ${holder.pid}: a command stopped part way loses no data)\n`, '--wait 0: the lock error at once')

  const bad = await logdisk('snapshots', store, '--wait', 'soon')
  t.equal(bad.code, 1)
  t.equal(bad.stderr, 'logdisk: --wait "soon" is not a number of seconds (like 5, or 0 to fail at once)\n')
})

t.test('a command started while another holds the store runs once it is released', async t => {
  const dir = tmpDir('lock-wait2')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  t.equal((await logdisk('create', store, '--size', '16M', '--segment-size', '2M')).code, 0)
  const holder = await holdLock(store, 1500)
  t.teardown(() => holder.kill('SIGKILL'))
  // The default wait (5 s) outlasts the holder's 1.5 s; a loaded machine gets a longer one.
  const r = await logdisk('snapshot', store, '--name', 'after', '--wait', '60')
  t.equal(r.code, 0, `the snapshot ran after the wait (${r.stderr})`)
  t.equal(holder.exitCode ?? (await new Promise(resolve => holder.on('exit', resolve))), 0, 'the holder released the store first')
  const list = JSON.parse((await logdisk('snapshots', store, '--json')).stdout)
  t.same(list.map((s: { name: string }) => s.name), ['after'])
  // Every command that takes the lock has --wait; the default is in its help.
  const help = await logdisk('snapshot', '--help')
  t.match(help.stdout.replace(/\s+/g, ' '), /--wait <seconds> wait this long for the store's lock when another command holds it \(default 5; 0 fails at once\)/)
})
