import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** Where a mounted store's daemon says how to reach it: <store>/daemon.json. */
export interface DaemonInfo {
  pid: number
  store: string
  mountpoint: string
  socket: string
  startedAt: string
  /** The FUSE transport serving the mount (devfuse or fuse-native). */
  transport?: string
  /** current.img is served read-only (mount -o ro). */
  readOnly?: boolean
  /** HOST:PORT of the Prometheus endpoint, when one is served (mount --metrics). */
  metrics?: string
}

export const DAEMON_FILE = 'daemon.json'
export const DAEMON_LOG = 'daemon.log'

/**
 * The control socket lives in the store (mode 0600) unless the path would pass the 107-byte
 * limit of a unix socket address; then it goes to the temp dir under a hash of the store path.
 */
export function controlSocketPath (storeDir: string): string {
  const inStore = path.join(storeDir, 'control.sock')
  if (Buffer.byteLength(inStore) < 100) return inStore
  const hash = crypto.createHash('sha256').update(storeDir).digest('hex').slice(0, 16)
  return path.join(os.tmpdir(), `logdisk-${hash}.sock`)
}

export function readDaemonInfo (storeDir: string): DaemonInfo | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(storeDir, DAEMON_FILE), 'utf8')) as DaemonInfo
  } catch {
    return undefined
  }
}

export { isAlive } from '../process-alive'

/** A logdisk FUSE mount as /proc/mounts lists it: fsname "logdisk:<store>", type fuse.logdisk. */
export interface LogdiskMount {
  store: string
  mountpoint: string
}

function unescapeMounts (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)))
}

export function logdiskMounts (): LogdiskMount[] {
  let text = ''
  try {
    text = fs.readFileSync('/proc/mounts', 'utf8')
  } catch {
    return []
  }
  const out: LogdiskMount[] = []
  for (const line of text.split('\n')) {
    const [fsname, mnt, type] = line.split(' ')
    if (type === 'fuse.logdisk' && fsname?.startsWith('logdisk:')) {
      out.push({ store: unescapeMounts(fsname.slice('logdisk:'.length)), mountpoint: unescapeMounts(mnt) })
    }
  }
  return out
}

/** The logdisk mount at `mountpoint`, if /proc/mounts lists one. */
export function logdiskMountAt (mountpoint: string): LogdiskMount | undefined {
  return logdiskMounts().find(m => m.mountpoint === mountpoint)
}

/**
 * The first warning or error the daemon logged at or after `sinceMs` (its `msg`, with `err`
 * when there is one), from the tail of `<store>/daemon.log`; undefined when there is none or
 * the log cannot be read. For the CLI's one-line errors about a daemon that did not do what
 * it was asked ("the daemon has not finished unmounting ..."), so they say why. The first,
 * not the last: what went wrong first is the cause, what followed is its consequence (a
 * detach that failed, then "exiting with the FUSE session still open").
 */
export function firstDaemonProblem (logFile: string, sinceMs: number): string | undefined {
  let text: string
  try {
    const fd = fs.openSync(logFile, 'r')
    try {
      const size = fs.fstatSync(fd).size
      const len = Math.min(size, 65536)
      const buf = Buffer.alloc(len)
      fs.readSync(fd, buf, 0, len, size - len)
      text = buf.toString('utf8')
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return undefined
  }
  for (const line of text.split('\n')) {
    let entry: { level?: number, time?: number, msg?: string, err?: unknown }
    try { entry = JSON.parse(line) } catch { continue }
    if (typeof entry.time !== 'number' || entry.time < sinceMs) continue
    if ((entry.level ?? 0) >= 40 && typeof entry.msg === 'string') return entry.err === undefined ? entry.msg : `${entry.msg}: ${String(entry.err)}`
  }
  return undefined
}
