// The Ceph test cluster leaves nothing behind however its owner ends: a test process killed
// with -9 (the watchdog stops the daemons), and a cluster whose watchdog died too (the next
// start sweeps it). Daemons are found by their command lines, which name the state directory.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CEPH_TEST_ROOT, cephMissing, freePorts, sweepStaleClusters } from './helpers/ceph'

/** Pids of the processes whose command line names `state`. */
function processesOf (state: string): number[] {
  const out: number[] = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ')
      if (cmd.includes(`${state}/`) || cmd.includes(`${state} `)) out.push(Number(entry))
    } catch { /* gone */ }
  }
  return out
}

async function until (what: string, check: () => boolean, timeoutMs: number): Promise<number> {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  return Date.now() - started
}

const missing = cephMissing()

t.test('a test process killed with -9: its watchdog stops the cluster and removes its state', { skip: missing }, async t => {
  const helper = path.resolve('dist/test/helpers/ceph.js')
  t.ok(fs.existsSync(helper), 'the compiled helper is there (make build)')
  const child = spawn(process.execPath, ['-e', `require(${JSON.stringify(helper)}).startCeph().then(g => { console.log('STATE ' + g.state); setInterval(() => {}, 1000) }, e => { console.error(e); process.exit(1) })`],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const state = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', d => { out += d; const m = /STATE (\S+)/.exec(out); if (m) resolve(m[1]) })
    child.on('exit', code => reject(new Error(`the child exited ${String(code)} before the cluster was up`)))
  })
  t.teardown(async () => { // whatever happens below, nothing stays
    for (const pid of processesOf(state)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    fs.rmSync(state, { recursive: true, force: true })
  })
  const daemons = processesOf(state)
  t.ok(daemons.length >= 4, `the cluster runs: ${daemons.length} processes (mon, osd, radosgw, watchdog)`)
  child.kill('SIGKILL')
  const ms = await until('the watchdog stops the cluster', () => processesOf(state).length === 0 && !fs.existsSync(state), 60_000)
  t.pass(`${ms} ms after kill -9 of its owner no process of the cluster runs and its state is gone`)
})

t.test('a cluster whose owner and watchdog are both gone is swept by the next start', { skip: missing }, async t => {
  const owner = spawn('sleep', ['600'], { stdio: 'ignore' })
  t.teardown(() => { if (owner.exitCode === null) owner.kill('SIGKILL') })
  fs.mkdirSync(CEPH_TEST_ROOT, { recursive: true })
  const state = path.join(CEPH_TEST_ROOT, `${owner.pid!}-sweeptest`)
  t.teardown(async () => {
    for (const pid of processesOf(state)) { try { process.kill(pid, 'SIGKILL') } catch { /* gone */ } }
    fs.rmSync(state, { recursive: true, force: true })
  })
  const [rgw, mon] = await freePorts(2)
  const started = await new Promise<number | null>(resolve => {
    const s = spawn('bash', [path.resolve('scripts/ceph/start-rgw.sh')], {
      stdio: 'ignore',
      env: { ...process.env, STATE: state, RGW_PORT: String(rgw), MON_PORT: String(mon), OWNER_PID: String(owner.pid) }
    })
    s.on('exit', code => resolve(code))
  })
  t.equal(started, 0, 'start-rgw.sh started a cluster owned by another process')
  const watchdog = Number(fs.readFileSync(path.join(state, 'run/watchdog.pid'), 'utf8'))
  process.kill(watchdog, 'SIGKILL') // as if the machine had killed everything but the daemons
  owner.kill('SIGKILL')
  await until('the owner is gone', () => owner.exitCode !== null || owner.signalCode !== null, 10_000)
  t.ok(processesOf(state).length >= 3, 'its daemons outlive it')
  const swept = await sweepStaleClusters()
  t.ok(swept.includes(state), 'sweepStaleClusters stops it', { swept })
  t.same(processesOf(state), [], 'no process of it runs')
  t.notOk(fs.existsSync(state), 'its state is removed')
})
