import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { LogdiskError } from '../../errors'
import type { Logger } from '../../store/logger'
import type { Folder } from '../image-ops'
import type { Session } from '../session'
import { DevFuseChannel, type RequestChannel } from './channel'
import { PolledChannel, pollingAvailable } from './polled-channel'
import { readBufferBytes } from './protocol'
import { FuseServer, type Negotiated } from './server'
import { makeDirs } from '../../make-dirs'

export interface DevFuseOptions {
  /** The mount's source as /proc/mounts shows it ("logdisk:<store>"). */
  fsname: string
  /** The type is fuse.<subtype>. */
  subtype: string
  log: Logger
  /** Largest request; 1 MiB unless LOGDISK_FUSE_MAX_WRITE says otherwise. */
  maxWrite?: number
  /**
   * Reader threads on /dev/fuse; 0: none, the event loop polls it (polled-channel.ts). Unless
   * LOGDISK_FUSE_READERS says otherwise: 0 where this Node can poll it, else DEFAULT_READERS.
   */
  readers?: number
  /** Request buffers per reader thread (DEFAULT_SLOTS_PER_READER, 16; the readers share them). */
  slotsPerReader?: number
  faults?: ReadonlySet<string>
  /** More mount options: allow_other, ro. */
  extraOptions?: readonly string[]
  /** Unmount (lazily) when this process dies without unmounting: libfuse's auto_unmount. Default on. */
  autoUnmount?: boolean
}

export interface DevFuseSession extends Session {
  readonly negotiated: Negotiated
  readonly server: FuseServer
}

// The kernel queues INIT as the mount(2) returns; only a starved process misses 10 s (a
// suite at load 15 on 2 cores did): a slow mount beats a failed one.
const INIT_TIMEOUT_MS = 30_000

/**
 * Reader threads, where the event loop cannot poll /dev/fuse itself (polled-channel.ts, the
 * default: no threads, 2 x 16 slots). Issue 11, the daemon's peak RSS: each is a worker thread with a Node
 * environment and V8 isolate of its own: 8-9 MiB resident apiece however idle (measured: 1, 2
 * and 4 workers added 14, 22 and 39 MiB). A reader only reads a request, CRCs a WRITE's blocks
 * and posts the slot; the event loop, which handles every request, is the bottleneck, and two
 * readers keep a read(2) pending while the other posts. 4 readers gave peaks of 216-235 MiB in
 * quick benches at load 6-8, 2 readers 190-211 (2026-12-02 night, README, Memory); speeds were
 * within the runs' spread. The slots stay 32 in all (2 x 16): as many as 4 x 8 were, and only
 * those that were busy at once become resident.
 */
export const DEFAULT_READERS = 2
export const DEFAULT_SLOTS_PER_READER = 16
/**
 * How long the polled channel keeps reading /dev/fuse after a reply that left nothing in flight
 * (polled-channel.ts pollForNext), in microseconds; LOGDISK_FUSE_POLL_US, 0 for never. fio's
 * next request at depth 1 came 10-30 us after a reply; 50 leaves room for a loaded machine
 * (QEMU's iothreads poll up to 32 us by default, poll-max-ns).
 */
export const DEFAULT_POLL_US = 50
/**
 * How often the polled channel gives back the pages of request buffers no request used since
 * the last time (polled-channel.ts releaseIdleBuffers), in milliseconds; LOGDISK_FUSE_RELEASE_MS,
 * 0 for never. Issue 11, the daemon's peak RSS: it came in the compactions after write jobs,
 * with every 1 MiB buffer a burst had touched still resident and idle.
 */
export const DEFAULT_RELEASE_IDLE_MS = 2000
/** A poll blocks the event loop for its whole budget when nothing comes: never longer than this. */
export const MAX_POLL_US = 1000
const END_WAIT_MS = 5_000

function envInt (name: string, dflt: number, min = 1): number {
  const raw = process.env[name]
  const v = Number(raw)
  return raw !== undefined && raw !== '' && Number.isInteger(v) && v >= min ? v : dflt
}

function run (cmd: string, args: string[], timeoutMs = 30_000): Promise<{ code: number, out: string }> {
  return new Promise(resolve => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0
      resolve({ code, out: `${stderr}${stdout}`.trim() })
    })
  })
}

/** One line of /proc/self/mountinfo. */
export interface MountInfo { id: number, parent: number, dev: string, mountpoint: string, fstype: string, source: string }

const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct) => String.fromCharCode(parseInt(oct, 8)))

export function mountInfo (): MountInfo[] {
  let text = ''
  try { text = fs.readFileSync('/proc/self/mountinfo', 'utf8') } catch { return [] }
  const out: MountInfo[] = []
  for (const line of text.split('\n')) {
    if (!line) continue
    const [head, tail = ''] = line.split(' - ')
    const f = head.split(' ')
    const t = tail.split(' ')
    out.push({ id: Number(f[0]), parent: Number(f[1]), dev: f[2], mountpoint: unescape(f[4]), fstype: t[0], source: unescape(t[1] ?? '') })
  }
  return out
}

/**
 * Aborts the FUSE connection of the mount whose device is `dev` ("0:64"): the fusectl file
 * /sys/fs/fuse/connections/<minor>/abort (Documentation/filesystems/fuse.rst, "Aborting a
 * filesystem connection"). Mounts fusectl first when it is not. Returns what it did, for the log.
 */
async function abortConnection (dev: string): Promise<string> {
  const dir = '/sys/fs/fuse/connections'
  const file = path.join(dir, dev.split(':')[1] ?? '', 'abort')
  if (!fs.existsSync(file)) await run('mount', ['-t', 'fusectl', 'fusectl', dir])
  try {
    fs.writeFileSync(file, '1')
    return `wrote 1 to ${file}`
  } catch (err) {
    return `cannot abort (${(err as Error).message})`
  }
}

function statWithin (p: string, ms: number): Promise<NodeJS.ErrnoException | null | 'timeout'> {
  return Promise.race([
    fs.promises.stat(p).then(() => null, (err: NodeJS.ErrnoException) => err),
    new Promise<'timeout'>(resolve => setTimeout(() => resolve('timeout'), ms).unref())
  ])
}

/**
 * Makes `mountpoint` ready: a stale FUSE mount there (its server died: ENOTCONN) is detached,
 * as fuse-native's `force` does; anything live is refused; a missing directory is created.
 */
async function prepareMountpoint (mountpoint: string, log: Logger): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const here = mountInfo().filter(m => m.mountpoint === mountpoint)
    if (here.length === 0) break
    const top = here[here.length - 1]
    const err = await statWithin(mountpoint, 5000)
    const stale = top.fstype.startsWith('fuse') && err !== null && err !== 'timeout' && err.code === 'ENOTCONN'
    if (!stale) {
      throw new LogdiskError('BUSY', `${mountpoint} is already a mount point (${top.fstype} ${top.source}); unmount it first`)
    }
    log.warn({ mountpoint, source: top.source }, 'detaching a stale FUSE mount left by a dead server')
    await run('umount', ['-l', mountpoint])
  }
  makeDirs(mountpoint)
}

/**
 * The watchdog behind auto-unmount: a shell that waits for EOF on a pipe whose other end only
 * this process holds (close-on-exec, so no child of ours inherits it). A clean unmount writes
 * "done" first. Any other EOF means this process died (kill -9, OOM, a crash): if our mount
 * (matched by mount id, parent id and device, so never a newer mount at the same place) is
 * still there, the shell detaches it, and the mountpoint is an empty directory again instead
 * of "Transport endpoint is not connected".
 */
const WATCHDOG = 'IFS= read -r line; [ "$line" = done ] && exit 0; grep -q "^$1 " /proc/self/mountinfo || exit 0; exec umount -l "$2"'

function startWatchdog (mountpoint: string, mine: MountInfo, log: Logger): ChildProcess | undefined {
  try {
    const child = spawn('sh', ['-c', WATCHDOG, 'logdisk-auto-unmount', `${mine.id} ${mine.parent} ${mine.dev}`, mountpoint], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore']
    })
    child.on('error', err => log.warn({ err: err.message }, 'auto-unmount watchdog did not start'))
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void }).unref?.()
    return child
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'auto-unmount watchdog did not start')
    return undefined
  }
}

/**
 * Mounts `folder` at `mountpoint` with the kernel's FUSE protocol spoken directly on
 * /dev/fuse (root only: mount(2) needs CAP_SYS_ADMIN; native-notes/devfuse.md). The mount is
 * made by mount(8) with the open /dev/fuse as its fd 3 (`-o fd=3`); `-i` keeps mount(8) from
 * looking for a /sbin/mount.fuse.<subtype> helper.
 */
export async function mountDevFuse (folder: Folder, mountpoint: string, opts: DevFuseOptions): Promise<DevFuseSession> {
  const log = opts.log
  if (process.platform !== 'linux') throw new LogdiskError('BAD_ARGUMENT', 'the devfuse transport needs Linux; use --transport fuse-native')
  if (process.getuid?.() !== 0) throw new LogdiskError('BAD_ARGUMENT', 'the devfuse transport needs root (mount(2)); use --transport fuse-native')
  const maxWrite = opts.maxWrite ?? envInt('LOGDISK_FUSE_MAX_WRITE', 1024 * 1024)
  const asked = opts.readers ?? envInt('LOGDISK_FUSE_READERS', pollingAvailable() ? 0 : DEFAULT_READERS, 0)
  // 0 asked of a Node that cannot poll the descriptor: reader threads, said in the log.
  const readers = asked === 0 && !pollingAvailable() ? DEFAULT_READERS : asked
  if (readers !== asked) log.warn({ readers }, 'this Node cannot poll /dev/fuse (no pipe_wrap binding): reading it with threads')
  const slotsPerReader = opts.slotsPerReader ?? envInt('LOGDISK_FUSE_SLOTS', DEFAULT_SLOTS_PER_READER)
  if (maxWrite < 4096 || maxWrite > 1024 * 1024 || maxWrite % 4096 !== 0) throw new LogdiskError('BAD_ARGUMENT', `max_write ${maxWrite} must be a multiple of 4096 between 4 KiB and 1 MiB`)

  await prepareMountpoint(mountpoint, log)
  let channel: RequestChannel
  try {
    channel = readers === 0
      ? new PolledChannel({ slots: DEFAULT_READERS * slotsPerReader, bufferBytes: readBufferBytes(maxWrite), log, pollUs: Math.min(envInt('LOGDISK_FUSE_POLL_US', DEFAULT_POLL_US, 0), MAX_POLL_US), releaseIdleMs: envInt('LOGDISK_FUSE_RELEASE_MS', DEFAULT_RELEASE_IDLE_MS, 0) })
      : new DevFuseChannel({ readers, slotsPerReader, bufferBytes: readBufferBytes(maxWrite), crcBlockBytes: folder.crcBlockBytes ?? 0, log })
  } catch (err) {
    throw new LogdiskError('IO', `cannot open /dev/fuse: ${(err as Error).message} (modprobe fuse? in a container: --device /dev/fuse)`, err)
  }
  const server = new FuseServer(folder, channel, { log, maxWrite, faults: opts.faults })
  channel.start((req, n, release, blockCrcs) => server.dispatch(req, n, release, blockCrcs))

  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0
  const options = [`fd=3,rootmode=40000,user_id=${uid},group_id=${gid},max_read=${maxWrite}`, ...(opts.extraOptions ?? [])].join(',')
  const mounted = await new Promise<{ code: number, out: string }>(resolve => {
    const child = spawn('mount', ['-i', '-t', `fuse.${opts.subtype}`, '-o', options, opts.fsname, mountpoint], {
      stdio: ['ignore', 'pipe', 'pipe', channel.fd]
    })
    let out = ''
    child.stdout!.on('data', d => { out += d })
    child.stderr!.on('data', d => { out += d })
    child.on('error', err => resolve({ code: -1, out: err.message }))
    child.on('close', code => resolve({ code: code ?? -1, out: out.trim() }))
  })
  if (mounted.code !== 0) {
    channel.stop()
    throw new LogdiskError('IO', `cannot mount at ${mountpoint}: mount exited ${mounted.code}: ${mounted.out}`)
  }
  channel.mounted()

  // From here the mount exists: every way out of this process must end it (native-notes/devfuse.md).
  const mine = mountInfo().filter(m => m.mountpoint === mountpoint && m.fstype === `fuse.${opts.subtype}`).pop()
  const watchdog = (opts.autoUnmount ?? true) && mine ? startWatchdog(mountpoint, mine, log) : undefined
  const disarm = (): void => {
    if (!watchdog?.stdin || watchdog.stdin.destroyed) return
    watchdog.stdin.on('error', () => undefined)
    watchdog.stdin.end('done\n')
  }
  // Node's exit joins worker threads, and a reader blocked in read(2) on a live mount never
  // returns: process.exit() (or a crash) with the session open would hang, and the mount with
  // it. So an exit that finds readers still running kills the process instead: the kernel
  // then aborts the connection (every waiter gets ENOTCONN) and the watchdog detaches the mount.
  const onExit = (): void => {
    if (channel.readersAlive === 0) return
    try { fs.writeSync(2, `logdisk: exiting with the FUSE session at ${mountpoint} still open; killing the process so the kernel ends it\n`) } catch { /* no stderr */ }
    process.kill(process.pid, 'SIGKILL')
  }
  // Node prints an uncaught exception after the 'exit' handlers, so it is said here first.
  const onCrash = (err: Error, origin: string): void => {
    try { fs.writeSync(2, `logdisk: ${origin}: ${err?.stack ?? String(err)}\n`) } catch { /* no stderr */ }
  }
  process.on('exit', onExit)
  process.on('uncaughtExceptionMonitor', onCrash)
  void channel.ended.then(() => {
    process.off('exit', onExit)
    process.off('uncaughtExceptionMonitor', onCrash)
  })

  let negotiated: Negotiated
  try {
    negotiated = await Promise.race([
      server.initialized,
      new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`no INIT from the kernel within ${INIT_TIMEOUT_MS / 1000} s`)), INIT_TIMEOUT_MS).unref())
    ])
  } catch (err) {
    await run('umount', ['-l', mountpoint])
    disarm()
    channel.stop()
    throw new LogdiskError('IO', `cannot mount at ${mountpoint}: ${(err as Error).message}`, err)
  }
  log.info({
    kernel: `${negotiated.kernelMajor}.${negotiated.kernelMinor}`,
    protocol: `7.${negotiated.minor}`,
    kernelFlags: `0x${negotiated.kernelFlags.toString(16)}`,
    flags: `0x${negotiated.flags.toString(16)}`,
    maxWrite: negotiated.maxWrite,
    maxPages: negotiated.maxPages,
    maxBackground: negotiated.maxBackground,
    readers: readers === 0 ? 'none: the event loop polls /dev/fuse' : readers,
    slotsPerReader
  }, 'FUSE session initialised on /dev/fuse')

  let unmounting = false
  const ended = new Promise<void>(resolve => {
    channel.ended.then(reason => {
      if (unmounting) return
      log.warn({ mountpoint, reason }, 'the kernel ended the FUSE session (unmounted from outside?)')
      disarm()
      resolve()
    })
    server.onDestroy(() => {
      if (unmounting) return
      log.info({ mountpoint }, 'the kernel sent DESTROY')
      disarm()
      resolve()
    })
  })

  return {
    transport: 'devfuse',
    negotiated,
    server,
    ended,
    attributesChanged: () => server.invalidateAttributes(),
    async unmount () {
      unmounting = true
      let r = await run('umount', [mountpoint])
      if (r.code !== 0 && mountInfo().some(m => m.mountpoint === mountpoint && mine !== undefined && m.id === mine.id)) {
        // Busy for the kernel (a shell's working directory inside): detach lazily, as fusermount -uz does.
        log.warn({ mountpoint, umount: r.out }, 'umount refused; detaching lazily')
        r = await run('umount', ['-l', mountpoint])
        if (r.code !== 0) {
          unmounting = false
          throw new LogdiskError('BUSY', `cannot unmount ${mountpoint}: ${r.out}`)
        }
      }
      disarm()
      log.info({ stats: { ...server.stats, slotsTouched: channel.slotsTouched, reads: channel.stats } }, 'FUSE session statistics')
      const ended = (ms: number): Promise<boolean> => Promise.race([channel.ended.then(() => true), new Promise<false>(resolve => setTimeout(() => resolve(false), ms).unref())])
      if (!(await ended(END_WAIT_MS)) && mine) {
        // Still held (a loop device over an image, a stop forced by a signal): end the
        // connection, as the kernel would when this process dies, so that the readers leave
        // read(2) and the process can exit cleanly. I/O on the held image fails from now on.
        const why = await abortConnection(mine.dev)
        log.warn({ mountpoint, abort: why }, 'the detached mount was still in use; aborted its FUSE connection (I/O on images still open fails from now on)')
        await ended(END_WAIT_MS)
      }
      channel.stop()
    }
  }
}
