import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from '../store/logger'

/**
 * systemd's readiness protocol (sd_notify(3), Type=notify): when NOTIFY_SOCKET is set, tell
 * the service manager we are ready, once current.img is really served: the daemon reads its
 * first block through its own mount first (asynchronously, on the thread pool: the event loop
 * stays free to answer the kernel). The message is sent by Debian's `systemd-notify` (package
 * systemd), run as a child without blocking the event loop, with MAINPID set to this process;
 * the unit therefore says NotifyAccess=all (examples/logdisk@.service).
 */
export async function notifyReady (mountpoint: string, image: string, log: Logger, status: string): Promise<boolean> {
  if (!process.env.NOTIFY_SOCKET) return false
  const fh = await fs.promises.open(path.join(mountpoint, image), 'r')
  try {
    await fh.read(Buffer.alloc(4096), 0, 4096, 0)
  } finally {
    await fh.close()
  }
  return sdNotify(['--ready', `--pid=${process.pid}`, `--status=${status}`], log)
}

/** Says what the daemon does now (STATUS=, shown by systemctl status); STOPPING=1 with `stopping`. */
export function notifyStatus (status: string, log: Logger, stopping = false): Promise<boolean> {
  if (!process.env.NOTIFY_SOCKET) return Promise.resolve(false)
  return sdNotify([...(stopping ? ['STOPPING=1'] : []), `--pid=${process.pid}`, `--status=${status}`], log)
}

function sdNotify (args: string[], log: Logger): Promise<boolean> {
  return new Promise(resolve => {
    let err = ''
    let child
    try {
      child = spawn('systemd-notify', args, { stdio: ['ignore', 'ignore', 'pipe'] })
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'systemd-notify did not start; the service manager was not told')
      return resolve(false)
    }
    child.stderr!.on('data', d => { err += d })
    child.on('error', e => {
      log.warn({ err: e.message }, 'systemd-notify did not start (install systemd); the service manager was not told')
      resolve(false)
    })
    child.on('close', code => {
      if (code !== 0) log.warn({ code, err: err.trim() }, 'systemd-notify failed')
      resolve(code === 0)
    })
  })
}
