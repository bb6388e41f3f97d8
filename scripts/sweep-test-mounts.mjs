#!/usr/bin/env node
// Removes what tests of this checkout left mounted: logdisk mounts of stores under the temp
// directory (`logdisk-*`, as test/helpers/cli.ts tmpDir names them) whose daemon runs this
// checkout's dist/ or is dead, the filesystems and loop devices stacked on them, and their
// daemons. A test file that tap kills on its timeout never runs its teardown; run-tests.mjs
// calls this after the suite so nothing outlives `make test`. Mounts of other checkouts
// (another worktree's tests running at the same time) and of another test run of this
// checkout that is still going are left alone.
//   node scripts/sweep-test-mounts.mjs [--dry-run]
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const DIST = path.join(REPO, 'dist') + path.sep
const dry = process.argv.includes('--dry-run')
const TMP = path.join(os.tmpdir(), 'logdisk-')

const unescape = s => s.replace(/\\(\d{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)))
const mounts = () => fs.readFileSync('/proc/mounts', 'utf8').split('\n').filter(Boolean).map(l => {
  const [source, target, type] = l.split(' ')
  return { source: unescape(source), target: unescape(target), type }
})
const sh = (cmd, args) => dry ? console.log(`would run: ${cmd} ${args.join(' ')}`) : spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 })

const alive = pid => { try { process.kill(pid, 0); return true } catch (err) { return err.code === 'EPERM' } }
/** Alive and not a zombie: a killed daemon stays one until init reaps it, seconds here. */
const running = pid => {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return alive(pid)
  }
}

/** Whether test run `run` (a run-tests.mjs pid; '' or undefined: none) is another run, still going. */
const otherRunGoing = run => run !== undefined && run !== '' && run !== process.env.LOGDISK_TEST_RUN && alive(Number(run))

/**
 * The daemon serving `store` as daemon.json names it: its pid, whether it is alive, and
 * whether it is ours to sweep: it runs this checkout's dist/ and was started by this test run
 * (LOGDISK_TEST_RUN, set by run-tests.mjs) or by a run that has ended; a daemon of another
 * run still going is left alone. Undefined when daemon.json is not there (yet).
 */
function daemonOf (store) {
  let pid
  try {
    pid = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid
  } catch {
    return undefined
  }
  if (!running(pid)) return { pid, alive: false, ours: true }
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
    const run = env.find(v => v.startsWith('LOGDISK_TEST_RUN='))?.slice('LOGDISK_TEST_RUN='.length)
    return { pid, alive: true, ours: argv.some(a => a.startsWith(DIST)) && !otherRunGoing(run) }
  } catch {
    return { pid, alive: true, ours: false } // exited as we looked, or not readable: next time
  }
}

/**
 * Whether the test directory holding `store` (test/helpers/cli.ts tmpDir marks it) was made
 * by another checkout or by another run still going; undefined when it carries no mark. A
 * daemon a test killed on purpose is dead like a leftover one: only this tells them apart
 * (helpers running single test files in other worktrees swept such a mount mid-test).
 */
function markedForeign (store) {
  const top = path.join(os.tmpdir(), path.relative(os.tmpdir(), store).split(path.sep)[0])
  try {
    const { run, repo } = JSON.parse(fs.readFileSync(path.join(top, '.logdisk-test-run'), 'utf8'))
    return repo !== REPO || otherRunGoing(run)
  } catch {
    return undefined
  }
}

const swept = []
for (const m of mounts()) {
  if (m.type !== 'fuse.logdisk' || !m.source.startsWith(`logdisk:${TMP}`)) continue
  const store = m.source.slice('logdisk:'.length)
  const foreign = markedForeign(store)
  if (foreign) continue
  const daemon = daemonOf(store)
  // No daemon.json: a mount being set up (it is written just after), unless the directory
  // is marked as this run's or a finished run's.
  if (daemon === undefined && foreign === undefined) continue
  if (daemon && !daemon.ours) continue // another checkout's test, still running
  // What is stacked on the image: filesystems on loop devices backed by files under the mount.
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n')
    .filter(l => l.includes(`(${m.target}/`)).map(l => l.split(':')[0])
  for (const dev of loops) {
    for (const fsm of mounts().filter(x => x.source === dev)) sh('umount', ['-l', fsm.target])
    sh('losetup', ['-d', dev])
  }
  if (daemon?.alive) { try { if (!dry) process.kill(daemon.pid, 'SIGKILL') } catch { /* gone */ } }
  sh('umount', ['-l', m.target])
  swept.push(m.target)
}
// Other filesystems a test mounted in its directory (a small tmpfs for a full disk, ext4 on a
// loop device): only in a directory marked as this run's or a finished run's, deepest first.
for (const m of mounts().filter(x => x.target.startsWith(TMP) && x.type !== 'fuse.logdisk').reverse()) {
  if (markedForeign(m.target) !== false) continue
  sh('umount', ['-l', m.target])
  swept.push(m.target)
}
if (swept.length > 0) console.error(`sweep: removed ${swept.length} mount(s) left by tests: ${swept.join(' ')}`)
