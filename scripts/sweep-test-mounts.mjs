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

/**
 * The daemon serving `store`, if alive: its pid and whether it is ours to sweep: it runs this
 * checkout's dist/ and was started by this test run (LOGDISK_TEST_RUN, set by run-tests.mjs)
 * or by a run that has ended; a daemon of another run still going is left alone.
 */
function daemonOf (store) {
  try {
    const { pid } = JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8'))
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
    const run = env.find(v => v.startsWith('LOGDISK_TEST_RUN='))?.slice('LOGDISK_TEST_RUN='.length)
    const runGoing = run !== undefined && run !== process.env.LOGDISK_TEST_RUN && alive(Number(run))
    return { pid, ours: argv.some(a => a.startsWith(DIST)) && !runGoing }
  } catch {
    return undefined
  }
}

const swept = []
for (const m of mounts()) {
  if (m.type !== 'fuse.logdisk' || !m.source.startsWith(`logdisk:${TMP}`)) continue
  const store = m.source.slice('logdisk:'.length)
  const daemon = daemonOf(store)
  if (daemon && !daemon.ours) continue // another checkout's test, still running
  // What is stacked on the image: filesystems on loop devices backed by files under the mount.
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout.split('\n')
    .filter(l => l.includes(`(${m.target}/`)).map(l => l.split(':')[0])
  for (const dev of loops) {
    for (const fsm of mounts().filter(x => x.source === dev)) sh('umount', ['-l', fsm.target])
    sh('losetup', ['-d', dev])
  }
  if (daemon) { try { if (!dry) process.kill(daemon.pid, 'SIGKILL') } catch { /* gone */ } }
  sh('umount', ['-l', m.target])
  swept.push(m.target)
}
if (swept.length > 0) console.error(`sweep: removed ${swept.length} mount(s) left by tests: ${swept.join(' ')}`)
