import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import pino from 'pino'
import { LogdiskError } from '../../errors'
import { runDaemon } from '../../daemon/daemon'
import { DAEMON_LOG, isAlive, readDaemonInfo, type DaemonInfo } from '../../daemon/paths'
import { chooseTransport } from '../../fuse/mount'
import { prepareStore } from '../store-access'

const READY_TIMEOUT_MS = 120_000

export function register (program: Command): void {
  program.command('mount <store> <mountpoint>')
    .description('show the store\'s images (current.img) at <mountpoint>; runs as a daemon unless --foreground')
    .option('--foreground', 'stay in the foreground and log to stdout; Ctrl-C unmounts')
    .option('--takeover', 'take the replica (replicate.target) over from the host that holds it; that host is fenced')
    .option('--transport <name>', 'FUSE transport: devfuse (the kernel protocol on /dev/fuse; Linux, root), fuse-native (libfuse 2) or auto', process.env.LOGDISK_TRANSPORT || 'auto')
    .action(async (storeArg: string, mntArg: string, opts: { foreground?: boolean, transport: string, takeover?: boolean }) => {
      const store = path.resolve(storeArg)
      const mountpoint = path.resolve(mntArg)
      prepareStore(store, 'write') // fail here, in the caller's terminal: no store, a copy, no permission, no space
      const running = readDaemonInfo(store)
      // A daemon.json copied along with the store (cp -a) names the original's daemon: not this one.
      if (running && running.store === store && running.pid !== process.pid && isAlive(running.pid)) {
        throw new LogdiskError('STORE_LOCKED', `store ${store} is already mounted at ${running.mountpoint} (pid ${running.pid})`)
      }
      chooseTransport(opts.transport) // an unknown name fails here, in the caller's terminal
      if (opts.foreground) await foreground(store, mountpoint, opts.transport, opts.takeover === true)
      else await background(store, mountpoint, opts.transport, opts.takeover === true)
    })
}

async function foreground (store: string, mountpoint: string, transport: string, takeover: boolean): Promise<void> {
  const log = pino({ base: { pid: process.pid } }, pino.destination({ fd: 1, sync: true }))
  try {
    await runDaemon(store, mountpoint, log, info => process.send?.({ ready: info }), { transport, takeover })
  } catch (err) {
    process.send?.({ error: (err as Error).message })
    throw err
  }
  process.exit(0) // fuse-native's thread would otherwise keep the process alive
}

/** Starts the daemon detached, its output appended to <store>/daemon.log; returns once mounted. */
function background (store: string, mountpoint: string, transport: string, takeover: boolean): Promise<void> {
  const logFile = path.join(store, DAEMON_LOG)
  const logFd = fs.openSync(logFile, 'a')
  const child = spawn(process.execPath, [process.argv[1], 'mount', store, mountpoint, '--foreground', '--transport', transport, ...(takeover ? ['--takeover'] : [])], {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'ipc']
  })
  fs.closeSync(logFd)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new LogdiskError('IO', `the daemon did not mount within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}`))
    }, READY_TIMEOUT_MS)
    child.on('message', (msg: { ready?: DaemonInfo, error?: string }) => {
      clearTimeout(timer)
      if (msg.error) return reject(new LogdiskError('IO', msg.error))
      console.log(`mounted ${store} at ${mountpoint} (pid ${child.pid}; ${msg.ready?.transport ?? 'FUSE'}; log ${logFile})`)
      child.disconnect()
      child.unref()
      resolve()
    })
    child.on('exit', code => {
      clearTimeout(timer)
      reject(new LogdiskError('IO', `the daemon exited (code ${code}) before mounting; see ${logFile}`))
    })
  })
}
