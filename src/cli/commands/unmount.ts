import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import { request } from '../../daemon/control'
import { isAlive, logdiskMounts, readDaemonInfo } from '../../daemon/paths'

const EXIT_WAIT_MS = 30_000

export function register (program: Command): void {
  program.command('unmount <mountpoint>')
    .description('flush and unmount; refused while an image is open (detach loop devices first)')
    .action(async (mntArg: string) => {
      const mountpoint = path.resolve(mntArg)
      const mount = logdiskMounts().find(m => m.mountpoint === mountpoint)
      if (!mount) throw new LogdiskError('NOT_MOUNTED', `${mountpoint} is not a logdisk mount`)
      const daemon = readDaemonInfo(mount.store)
      if (!daemon || !isAlive(daemon.pid)) {
        await lazyUnmount(mountpoint)
        fs.rmSync(path.join(mount.store, 'daemon.json'), { force: true })
        console.log(`removed the stale mount at ${mountpoint} (its daemon had died)`)
        return
      }
      try {
        await request(daemon.socket, 'unmount', {}, 60_000)
      } catch (err) {
        // The pid may linger a moment after kill -9: no answer on the socket means stale.
        if (!(err instanceof LogdiskError) || err.code !== 'NOT_MOUNTED') throw err
        await lazyUnmount(mountpoint)
        fs.rmSync(path.join(mount.store, 'daemon.json'), { force: true })
        console.log(`removed the stale mount at ${mountpoint} (its daemon does not answer)`)
        return
      }
      // Wait for the daemon to finish closing the store, so the next command can open it.
      const deadline = Date.now() + EXIT_WAIT_MS
      while (isAlive(daemon.pid) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      if (isAlive(daemon.pid)) throw new LogdiskError('BUSY', `the daemon (pid ${daemon.pid}) has not finished unmounting ${mountpoint} after ${EXIT_WAIT_MS / 1000} s; see ${path.join(mount.store, 'daemon.log')}`)
      console.log(`unmounted ${mountpoint}`)
    })
}

function lazyUnmount (mountpoint: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('fusermount', ['-uz', mountpoint], err => err ? reject(new LogdiskError('IO', `fusermount -uz ${mountpoint} failed: ${err.message}`)) : resolve())
  })
}
