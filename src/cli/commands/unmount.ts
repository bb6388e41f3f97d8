import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError, isLogdiskError } from '../../errors'
import { request } from '../../daemon/control'
import { DAEMON_FILE, DAEMON_LOG, controlSocketPath, isAlive, firstDaemonProblem, logdiskMountAt, readDaemonInfo } from '../../daemon/paths'
import { holdersOf } from '../../daemon/holders'
import { jsonMode, printJson } from '../output'
import { lostLoops } from '../loop-registry'

const EXIT_WAIT_MS = 30_000
/** How long unmount waits for the daemon to answer (tests shorten it). */
const ANSWER_WAIT_MS = Number(process.env.LOGDISK_ANSWER_WAIT_MS || 60_000)

/**
 * `unmount <mountpoint>`: asks the daemon to flush and unmount, and waits for it to exit.
 * Refused (BUSY, naming what holds which image) while an image is open. A mount is detached
 * lazily only when its daemon process is gone (killed): a live daemon that does not answer is
 * reported, never cut off, since loop devices and filesystems may still sit on its images.
 */
export function register (program: Command): void {
  program.command('unmount <mountpoint>')
    .description('flush and unmount; refused while an image is open (detach loop devices first)')
    .option('--json', 'print {mountpoint, store, stale}')
    .action(async (mntArg: string) => {
      const mountpoint = path.resolve(mntArg)
      const mount = logdiskMountAt(mountpoint)
      // Also what a killed daemon's mount gives once its watchdog (devfuse) has detached it: the
      // loop devices left over its images are named, or nothing would tell of them.
      if (!mount) {
        const left = lostLoops(mountpoint)
        const loops = left.length === 0 ? '' : `; ${left.map(l => `${l.device} is still attached to ${l.backing} of that mount, which is gone (its daemon died?)`).join(', ')}: its I/O fails; release it with logdisk detach ${left.map(l => l.device).join(' ')} (umount what is mounted on it first)`
        throw new LogdiskError('NOT_MOUNTED', `${mountpoint} is not a logdisk mount: nothing to unmount${loops}`)
      }
      const info = readDaemonInfo(mount.store)
      const socket = info?.socket ?? controlSocketPath(mount.store)
      const pid = info && info.mountpoint === mountpoint && servesMount(info.pid, mountpoint, mount.store) ? info.pid : undefined
      const log = path.join(mount.store, DAEMON_LOG)
      if (pid === undefined) {
        // No daemon process on record: one may still answer on the socket (daemon.json lost).
        let answering = false
        try {
          await request(socket, 'status', {}, 5_000)
          answering = true
        } catch { /* nobody listens: the daemon is gone */ }
        if (answering) throw new LogdiskError('BUSY', `${mountpoint}: a daemon answers on ${socket} but ${path.join(mount.store, DAEMON_FILE)} does not name it; nothing was unmounted; see ${log}`)
        return removeStale(mountpoint, mount.store, info ? `its daemon (pid ${info.pid}) is gone` : 'its daemon is gone')
      }
      const asked = Date.now()
      try {
        await request(socket, 'unmount', {}, ANSWER_WAIT_MS)
      } catch (err) {
        if (isLogdiskError(err, 'NOT_MOUNTED') || isLogdiskError(err, 'DAEMON_DIED')) {
          // No answer: only a dead daemon's mount may be detached behind its back.
          await new Promise(resolve => setTimeout(resolve, 200)) // a killed pid may linger a moment
          if (!isAlive(pid)) return removeStale(mountpoint, mount.store, `its daemon (pid ${pid}) is gone`)
          throw new LogdiskError('BUSY', `the daemon (pid ${pid}) serving ${mountpoint} does not answer; nothing was unmounted; see ${log}; stop it with kill ${pid} (kill -9 ${pid} if that does not help), then run logdisk unmount again`)
        }
        throw err
      }
      // Wait for the daemon to finish closing the store, so the next command can open it.
      const deadline = Date.now() + EXIT_WAIT_MS
      while (isAlive(pid) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      if (isAlive(pid)) {
        const why = firstDaemonProblem(log, asked)
        throw new LogdiskError('BUSY', `the daemon (pid ${pid}) has not finished unmounting ${mountpoint} after ${EXIT_WAIT_MS / 1000} s${why ? ` (it logged: ${why})` : ''}; see ${log}`)
      }
      // The daemon removes daemon.json only once the store closed cleanly: still naming it, the
      // daemon exited without (closing the store failed, or the stop's deadline ran out). It
      // had been reported as unmounted (helper-97's D2).
      if (readDaemonInfo(mount.store)?.pid === pid) {
        const why = firstDaemonProblem(log, asked)
        if (logdiskMountAt(mountpoint) !== undefined) await lazyUnmount(mountpoint).catch(() => undefined)
        throw new LogdiskError('IO', `the daemon (pid ${pid}) detached ${mountpoint} but exited without closing the store ${mount.store} cleanly${why ? ` (it logged: ${why})` : ''}; the store is as after a crash: its next open recovers it from the log, which holds every write that was flushed; see ${log}`)
      }
      // The daemon exits even when its transport could not detach the mount (it logs why):
      // what it left is a stale mount, removed here as for a killed daemon.
      if (logdiskMountAt(mountpoint) !== undefined) {
        const why = firstDaemonProblem(log, asked)
        return removeStale(mountpoint, mount.store, `its daemon stopped but could not detach it${why ? ` (it logged: ${why})` : ''}`)
      }
      if (jsonMode()) printJson({ mountpoint, store: mount.store, stale: false })
      else console.log(`unmounted ${mountpoint}`)
    })
}

/** Whether `pid` is alive and is the daemon of this mount (not a pid reused by another program). */
function servesMount (pid: number, mountpoint: string, store: string): boolean {
  if (!isAlive(pid)) return false
  try {
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    return args.includes(mountpoint) || args.includes(store)
  } catch {
    return true // no /proc: trust the pid
  }
}

async function removeStale (mountpoint: string, store: string, why: string): Promise<void> {
  const holders = holdersOf(mountpoint)
  await lazyUnmount(mountpoint)
  fs.rmSync(path.join(store, DAEMON_FILE), { force: true })
  const still = holders.map(h => `${h.image} is still held by ${h.what}, whose I/O now fails${h.release ? ` (release with: ${h.release})` : ''}`)
  if (jsonMode()) return printJson({ mountpoint, store, stale: true, why, stillHeld: holders.map(h => ({ image: h.image, by: h.what, release: h.release ?? null })) })
  console.log(`removed the stale mount at ${mountpoint} (${why})${still.length > 0 ? `; ${still.join('; ')}` : ''}`)
}

function lazyUnmount (mountpoint: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('fusermount', ['-uz', mountpoint], err => {
      // Gone meanwhile (the devfuse watchdog of a daemon that exited detaches it too): done.
      if (err && logdiskMountAt(mountpoint) !== undefined) reject(new LogdiskError('IO', `fusermount -uz ${mountpoint} failed: ${err.message.trim().split('\n')[0]}`))
      else resolve()
    })
  })
}
