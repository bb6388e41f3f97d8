import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Command } from 'commander'
import { LogdiskError } from '../../errors'
import type { DaemonOptions } from '../../daemon/daemon'
import { KNOWN_OPTIONS, parseMountOptions, type MountOptions } from '../mount-options'
import { DAEMON_LOG, isAlive, logdiskMountAt, readDaemonInfo, type DaemonInfo } from '../../daemon/paths'
import { prepareStore } from '../store-access'
import { warn } from '../output'
import { unfinishedReceive, unfinishedReceiveText } from '../../copy/receive-marker'
import { applyRuntimeHeapFlags, daemonEnv, daemonNodeFlags } from '../../daemon/memory-flags'

const READY_TIMEOUT_MS = 120_000

export function register (program: Command): void {
  program.command('mount <store> <mountpoint>')
    .description('show the store\'s images (current.img) at <mountpoint>; runs as a daemon unless --foreground')
    .option('--foreground', 'stay in the foreground and log to stdout; Ctrl-C unmounts')
    .option('--takeover', 'take the replica (replicate.target) over from the host that holds it; that host is fenced')
    .option('--transport <name>', 'FUSE transport: devfuse (the kernel protocol on /dev/fuse; Linux, root), fuse-native (libfuse 2) or auto')
    .option('--allow-other', 'let users other than the one mounting open the images (FUSE allow_other)')
    .option('--read-only', 'serve current.img read-only too')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (off by default)')
    .option('-o, --options <list>', `mount options as in fstab: ${KNOWN_OPTIONS}; generic ones (nofail, _netdev, ...) are ignored`)
    .option('--json', 'print the mount as JSON')
    .action(async (storeArg: string, mntArg: string, cmdOpts: { foreground?: boolean, takeover?: boolean, transport?: string, allowOther?: boolean, readOnly?: boolean, metrics?: string, options?: string, json?: boolean }) => {
      const store = path.resolve(storeArg)
      const mountpoint = path.resolve(mntArg)
      const mo: MountOptions = cmdOpts.options ? parseMountOptions(cmdOpts.options) : {}
      const opts: DaemonOptions & { foreground?: boolean, json?: boolean, transport: string } = {
        foreground: cmdOpts.foreground,
        json: cmdOpts.json,
        transport: cmdOpts.transport ?? mo.transport ?? (process.env.LOGDISK_TRANSPORT || 'auto'),
        allowOther: cmdOpts.allowOther ?? mo.allowOther,
        readOnly: cmdOpts.readOnly ?? mo.readOnly,
        metrics: cmdOpts.metrics ?? mo.metrics,
        takeover: cmdOpts.takeover === true
      }
      // The daemon, FUSE and metrics modules (pino, prom-client, fuse-native) are loaded here,
      // not when the CLI starts: every other command would pay for them (issue 12 item 6).
      const { parseListenAddress } = await import('../../metrics/server')
      const { chooseTransport } = await import('../../fuse/mount')
      if (opts.metrics !== undefined) parseListenAddress(opts.metrics) // a bad address fails here, in the caller's terminal
      prepareStore(store, 'write') // fail here, in the caller's terminal: no store, a copy, no permission, no space
      // It mounts (its partial image may be what the user wants to look at), but not silently.
      const unfinished = unfinishedReceive(store)
      if (unfinished) warn(unfinishedReceiveText(store, unfinished))
      const running = readDaemonInfo(store)
      // A daemon.json copied along with the store (cp -a) names the original's daemon: not this one.
      if (running && running.store === store && running.pid !== process.pid && isAlive(running.pid)) {
        throw new LogdiskError('STORE_LOCKED', `store ${store} is already mounted at ${running.mountpoint} (pid ${running.pid})`)
      }
      const { transport } = chooseTransport(opts.transport) // an unknown name fails here, in the caller's terminal
      checkMountpoint(mountpoint, transport, !!opts.allowOther)
      if (opts.foreground) await foreground(store, mountpoint, opts)
      else await background(store, mountpoint, opts)
    })
}

async function foreground (store: string, mountpoint: string, opts: DaemonOptions): Promise<void> {
  const { default: pino } = await import('pino')
  const { runDaemon } = await import('../../daemon/daemon')
  // Started by `mount` below the flags are on the command line already; started by systemd
  // (examples/logdisk@.service) this sets the heap growing factor (memory-flags.ts).
  applyRuntimeHeapFlags()
  // LOGDISK_LOG_LEVEL=debug adds what tuning needs (each checkpoint's timings).
  const log = pino({ base: { pid: process.pid }, level: process.env.LOGDISK_LOG_LEVEL || 'info' }, pino.destination({ fd: 1, sync: true }))
  try {
    await runDaemon(store, mountpoint, log, info => process.send?.({ ready: info }), opts)
  } catch (err) {
    process.send?.({ error: (err as Error).message })
    throw err
  }
  // fuse-native's thread would otherwise keep the process alive; 1 when the stop could not
  // close the store cleanly (runDaemon set it).
  process.exit()
}

/** Starts the daemon detached, its output appended to <store>/daemon.log; returns once mounted. */
function background (store: string, mountpoint: string, opts: DaemonOptions & { json?: boolean, transport: string }): Promise<void> {
  const logFile = path.join(store, DAEMON_LOG)
  // The daemon's V8 heap and malloc settings (memory-flags.ts: what they cut from its peak RSS);
  // read first, so that a malformed LOGDISK_DAEMON_MALLOC_ENV fails before anything starts.
  const env = daemonEnv()
  const flags = daemonNodeFlags()
  // The daemon's stdout and stderr go to the log writer (JSON lines only, rotated), not to the file.
  const writer = spawn(process.execPath, [require.resolve('../../daemon/log-writer'), logFile], { detached: true, stdio: ['pipe', 'ignore', 'ignore'] })
  const args = [process.argv[1], 'mount', store, mountpoint, '--foreground', '--transport', opts.transport]
  if (opts.allowOther) args.push('--allow-other')
  if (opts.readOnly) args.push('--read-only')
  if (opts.metrics !== undefined) args.push('--metrics', opts.metrics)
  if (opts.takeover) args.push('--takeover')
  const child = spawn(process.execPath, [...flags, ...args], {
    env,
    detached: true,
    stdio: ['ignore', writer.stdin!, writer.stdin!, 'ipc']
  })
  // The daemon holds the only write end now: the writer sees the end of it when the daemon exits.
  writer.stdin!.destroy()
  writer.unref()
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new LogdiskError('IO', `the daemon did not mount within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}`))
    }, READY_TIMEOUT_MS)
    child.on('message', (msg: { ready?: DaemonInfo, error?: string }) => {
      clearTimeout(timer)
      if (msg.error) return reject(new LogdiskError('IO', msg.error))
      if (opts.json) console.log(JSON.stringify({ store, mountpoint, pid: child.pid, transport: msg.ready?.transport, socket: msg.ready?.socket, log: logFile, readOnly: !!opts.readOnly, allowOther: !!opts.allowOther, metrics: msg.ready?.metrics ?? null }, null, 2))
      else console.log(`mounted ${store} at ${mountpoint} (pid ${child.pid}; ${msg.ready?.transport ?? 'FUSE'}${opts.readOnly ? '; read-only' : ''}${msg.ready?.metrics ? `; metrics http://${msg.ready.metrics}/metrics` : ''}; log ${logFile})`)
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

/**
 * What would make the mount fail, said here in the caller's terminal rather than only in
 * daemon.log: a folder that is not empty, a file, no /dev/fuse, allow_other for a user
 * without user_allow_other in /etc/fuse.conf.
 */
function checkMountpoint (mountpoint: string, transport: string, allowOther: boolean): void {
  if (!fs.existsSync('/dev/fuse') && process.platform === 'linux') {
    throw new LogdiskError('IO', 'cannot mount: there is no /dev/fuse (load the module: modprobe fuse; in a container, pass the device: --device /dev/fuse)')
  }
  if (transport === 'devfuse') {
    try {
      fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK)
    } catch {
      throw new LogdiskError('READ_ONLY', 'cannot mount with the devfuse transport: no permission on /dev/fuse (it needs root); use --transport fuse-native')
    }
  }
  if (allowOther && process.getuid?.() !== 0) {
    let conf = ''
    try { conf = fs.readFileSync('/etc/fuse.conf', 'utf8') } catch { /* none */ }
    if (!/^\s*user_allow_other\s*$/m.test(conf)) {
      throw new LogdiskError('BAD_ARGUMENT', 'allow_other needs root, or the line user_allow_other in /etc/fuse.conf (add it as root, or mount without allow_other)')
    }
  }
  const isMountpoint = logdiskMountAt(mountpoint) !== undefined ||
    fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === mountpoint.replace(/ /g, '\\040'))
  if (isMountpoint) return // a stale or live mount there: the daemon clears a stale one or says what is mounted
  let st: fs.Stats
  try {
    st = fs.statSync(mountpoint)
  } catch {
    return // missing: the daemon creates it
  }
  if (!st.isDirectory()) throw new LogdiskError('BAD_ARGUMENT', `cannot mount at ${mountpoint}: it is a file, not a folder`)
  const entries = fs.readdirSync(mountpoint)
  if (entries.length > 0) {
    const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', ...' : '')
    // An image name here is a plain file on the folder's own filesystem: written by something
    // that opened it while nothing was mounted, e.g. after a daemon died and its mount was
    // detached (a hostile test's D1: `dd of=<mnt>/current.img` then wrote beside the store).
    const images = entries.filter(e => e.endsWith('.img') && fs.lstatSync(path.join(mountpoint, e)).isFile())
    const stray = images.length > 0 ? `; ${images.slice(0, 3).join(', ')} ${images.length === 1 ? 'is a plain file' : 'are plain files'} of this folder, not of a store: written while nothing was mounted here (after a daemon died?); what was written to ${images.length === 1 ? 'it' : 'them'} is not in any store: move ${images.length === 1 ? 'it' : 'them'} away` : ''
    throw new LogdiskError('BAD_ARGUMENT', `cannot mount at ${mountpoint}: the folder is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}: ${shown})${stray}; the images would hide them: mount on an empty folder`)
  }
}
