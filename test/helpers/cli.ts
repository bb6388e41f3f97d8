import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

/** The compiled CLI: `make test` builds before it runs the tests. */
export const CLI = path.resolve('dist/src/cli/main.js')

export interface Run { code: number, stdout: string, stderr: string }

/** Runs a program to completion without throwing on a non-zero exit. */
export function run (cmd: string, args: string[], opts: { timeoutMs?: number, env?: Record<string, string> } = {}): Promise<Run> {
  return new Promise(resolve => {
    execFile(cmd, args, { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? (err as any).code : 1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) })
    })
  })
}

export function logdisk (...args: string[]): Promise<Run> {
  return run(process.execPath, [CLI, ...args])
}

/** Runs a command that must succeed; throws with its output otherwise. */
export async function must (cmd: string, ...args: string[]): Promise<string> {
  const r = await run(cmd, args)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

export function canMount (): string | false {
  if (process.getuid?.() !== 0) return 'mount tests need root'
  if (!fs.existsSync('/dev/fuse')) return 'mount tests need /dev/fuse'
  if (!fs.existsSync(CLI)) return 'run make build first (dist/src/cli/main.js is missing)'
  return false
}

/**
 * A fresh temp directory for a test. It names the test run and checkout that made it
 * (TEST_RUN_MARKER), so that scripts/sweep-test-mounts.mjs, which removes the mounts of dead
 * daemons that tests left, never removes one a test of another run killed on purpose.
 */
export function tmpDir (name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `logdisk-${name}-`))
  fs.writeFileSync(path.join(dir, TEST_RUN_MARKER), JSON.stringify({ run: process.env.LOGDISK_TEST_RUN ?? '', repo: process.cwd() }))
  return dir
}
export const TEST_RUN_MARKER = '.logdisk-test-run'


/**
 * The store's daemon.log once it matches `re` (or as it is after `timeoutMs`): the daemon's
 * lines reach the file through a pipe and a log-writer process (src/daemon/log-writer.ts), so
 * a line can land after the reply or exit that follows it. The caller asserts the match.
 */
export async function daemonLog (store: string, re: RegExp, timeoutMs = 10_000): Promise<string> {
  const read = (): string => { try { return fs.readFileSync(path.join(store, 'daemon.log'), 'utf8') } catch { return '' } }
  const deadline = Date.now() + timeoutMs
  let text = read()
  while (!re.test(text) && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 50))
    text = read()
  }
  return text
}

export function daemonPid (store: string): number {
  return JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).pid
}

export function isMounted (mountpoint: string): boolean {
  const lines = fs.readFileSync('/proc/mounts', 'utf8').split('\n')
  return lines.some(l => l.split(' ')[1] === mountpoint)
}

/**
 * A failed test's evidence, before cleanup removes it: the tail of every daemon.log under
 * `dir` (stores one or two levels down) as TAP comments. A failure seen once on a loaded CI
 * machine is otherwise gone with its directory.
 */
function printDaemonLogs (dir: string, t: { comment: (...m: unknown[]) => void }, lines = 60): void {
  const logs = storeDirsUnder(dir, 'daemon.log').map(d => path.join(d, 'daemon.log'))
  for (const log of logs) {
    const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines)
    t.comment(`${log} (last ${tail.length} lines):\n${tail.join('\n')}`)
  }
}

/**
 * Undoes whatever a test left mounted under `dir`, in the reverse of the order it was mounted:
 * filesystems loop-mounted over an image, their loop devices, logdisk mounts (their daemons
 * killed if the unmount fails), and last what holds the stores (a tmpfs, an ext4 pool volume on
 * a loop device). A store's filesystem unmounted before its daemon left the daemon writing to
 * a detached filesystem while the directory was removed (ENOTEMPTY once on CI). Used in
 * teardown so a failing test leaves nothing behind; given the test, a failed one first prints
 * its daemons' logs (printDaemonLogs).
 */
export async function cleanup (dir: string, t?: { passing: () => boolean, comment: (...m: unknown[]) => void }): Promise<void> {
  if (t !== undefined && !t.passing()) printDaemonLogs(dir, t)
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map(l => l.split(' ')).filter(f => f[1]?.startsWith(dir))
  const firstFuse = mounts.findIndex(f => f[2]?.startsWith('fuse'))
  const over = firstFuse < 0 ? [] : mounts.slice(firstFuse).filter(f => !f[2]?.startsWith('fuse'))
  const under = firstFuse < 0 ? mounts : mounts.slice(0, firstFuse)
  const detachLoops = async (): Promise<void> => {
    const loops = (await run('losetup', ['-a'])).stdout.split('\n').filter(l => l.includes(dir))
    for (const line of loops) await run('losetup', ['-d', line.split(':')[0]])
  }
  for (const [, mnt] of over.reverse()) await run('umount', ['-l', mnt])
  await detachLoops()
  const stores = storeDirsUnder(dir, 'daemon.json')
  for (const [, mnt] of mounts.filter(f => f[2]?.startsWith('fuse')).reverse()) {
    const r = await logdisk('unmount', mnt)
    if (r.code !== 0) await run('fusermount', ['-uz', mnt])
  }
  for (const store of stores) {
    try {
      // Only a daemon of this store: a daemon.json a kill -9 left names a pid that may be reused.
      const pid = daemonPid(store)
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(store)) process.kill(pid, 'SIGKILL')
    } catch { /* not running */ }
  }
  for (const [, mnt] of under.reverse()) await run('umount', ['-l', mnt])
  await detachLoops() // those under a store's filesystem, free now
  // A daemon still ending may add a file while the tree goes (ENOTEMPTY under load): retried.
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 })
}

/**
 * The directories under `dir` (itself and two levels down) that hold a file `name`. Never into
 * a FUSE mount: one whose daemon hangs would hang the walk (and the test). Into other mounts,
 * yes: a store on a tmpfs of its own (test/helpers/tmpfs-store.ts) keeps its daemon.log and
 * daemon.json there, and CI once lost the evidence of such a failure.
 */
function storeDirsUnder (dir: string, name: string): string[] {
  const fuse = new Set(fs.readFileSync('/proc/mounts', 'utf8').split('\n').map(l => l.split(' ')).filter(f => f[2]?.startsWith('fuse')).map(f => f[1]))
  const found: string[] = []
  const walk = (d: string, depth: number): void => {
    if (fuse.has(d)) return
    let names: string[]
    try { names = fs.readdirSync(d) } catch { return }
    if (names.includes(name)) found.push(d)
    for (const n of depth > 0 ? names : []) {
      const p = path.join(d, n)
      if (!n.startsWith('.')) { try { if (fs.lstatSync(p).isDirectory()) walk(p, depth - 1) } catch { /* gone */ } }
    }
  }
  walk(dir, 2)
  return found
}

/** Starts `logdisk mount --foreground` as a child; resolves once current.img is there. */
export async function mountForeground (store: string, mnt: string, extra: string[] = []): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI, 'mount', store, mnt, '--foreground', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', d => { out += d })
  child.stderr!.on('data', d => { out += d })
  const deadline = Date.now() + 30_000
  while (!out.includes('"msg":"mounted"')) {
    if (child.exitCode !== null) throw new Error(`mount --foreground exited ${child.exitCode}: ${out}`)
    if (Date.now() > deadline) throw new Error(`mount --foreground did not mount: ${out}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return child
}
