// Ctrl-C of a command that a mounted store's daemon ran (restore, export, send, verify, pool
// remove) ended the command without a word while the daemon finished the job: the output file
// appeared seconds later, and a rerun meanwhile was refused (`<out> exists`, `... is draining a
// volume`; helper-73). Now the command asks the daemon to stop the job at its next step and
// ends with one line once it has; nothing of the job is left (no `.partial`, no output), or,
// for a drain, what was moved stays moved and the volume stays in the pool. An op that cannot
// stop halfway (compact) says that the daemon runs it to its end.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { LogdiskError } from '../src/errors'
import { ops, type OpContext } from '../src/ops/ops'
import { request } from '../src/daemon/control'
import { Store } from '../src/store'
import { CLI, canMount, cleanup, daemonPid, logdisk, must, run, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024

/** The ops the mount daemon of `store` runs now, and how far each is (status --json `jobs`). */
async function jobsOf (store: string): Promise<Array<{ op: string, done: number, total: number }>> {
  const r = await logdisk('status', store, '--json')
  return r.code === 0 ? JSON.parse(r.stdout).jobs ?? [] : []
}

/**
 * Starts `logdisk ARGS` and sends it SIGINT once the daemon runs `op` and reports progress on
 * it (so the command waits for its answer, with its signal handlers in place); how it ended.
 */
async function interrupted (store: string, op: string, args: string[]): Promise<{ code: number | null, stderr: string, signalled: boolean }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', d => { stderr += String(d) })
  const ended = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  let signalled = false
  let exited = false
  void ended.then(() => { exited = true })
  while (!exited && !signalled) {
    if ((await jobsOf(store)).some(j => j.op === op && j.done > 0)) {
      child.kill('SIGINT')
      signalled = true
    } else await new Promise(resolve => setTimeout(resolve, 50))
  }
  const code = await ended
  clearTimeout(timer)
  return { code, stderr, signalled }
}

t.test('the library: an interruptible op asked to stop at a progress step leaves nothing; the others ignore it', { timeout: 120_000 }, async t => {
  const dir = tmpDir('interrupt-ops')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const storeDir = path.join(dir, 's')
  await Store.create(storeDir, { sizeBytes: 32 * MiB, segmentBytes: 2 * MiB })
  const { store } = await openStore(storeDir)
  try {
    await store.write(0, crypto.randomBytes(24 * MiB))
    await store.snapshot({ name: 'a' })
    // Asked to stop after its first progress step.
    const ctx = (): OpContext => {
      let steps = 0
      return { onProgress: () => { steps++ }, cancelled: () => steps > 0 }
    }
    for (const [op, args] of [
      ['restore', { at: 'a', out: path.join(dir, 'r.img') }],
      ['export', { name: 'a', out: path.join(dir, 'e.img') }],
      ['send', { name: 'a', out: path.join(dir, 'a.stream') }],
      ['verify', {}]
    ] as const) {
      const err = await ops[op](store, { ...args }, ctx()).then(() => undefined, e => e as LogdiskError)
      t.equal(err?.code, 'INTERRUPTED', `${op} stopped: ${err?.message}`)
      if ('out' in args) {
        t.notOk(fs.existsSync(args.out) || fs.existsSync(`${args.out}.partial`), `${op} left neither ${path.basename(args.out)} nor its .partial`)
        t.match(err?.message, `nothing was written to ${args.out}`, 'and says so')
      }
    }
    const again = await ops.restore(store, { at: 'a', out: path.join(dir, 'r.img') }, {}) as { out: string }
    const image = fs.readFileSync(again.out)
    t.ok(image.subarray(0, 24 * MiB).equals(await store.readSnapshot('a', 0, 24 * MiB)), 'a rerun restores the whole image')
    const compacted = await ops.compact(store, {}, ctx())
    t.ok(compacted, 'compact is not interruptible: it ran to its end')
  } finally {
    await store.close()
  }
})

const skip = canMount()

t.test('Ctrl-C of restore and pool remove run by the daemon stops the job; of compact, says the daemon finishes it', { skip, timeout: 300_000 }, async t => {
  const dir = tmpDir('interrupt-daemon')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 's')
  const mnt = path.join(dir, 'mnt')
  const [volume, other] = [path.join(dir, 'v2'), path.join(dir, 'v3')]
  await must(process.execPath, CLI, 'create', store, '--size', '256M', '--segment-size', '2M', '--pool', volume, '--pool', other)
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'job-slow' } })
  t.equal(mounted.code, 0, mounted.stderr)
  const data = crypto.randomBytes(40 * MiB)
  fs.writeFileSync(path.join(mnt, 'current.img'), data, { flag: 'r+' })
  t.equal((await logdisk('snapshot', store, '--name', 'a')).code, 0)

  const out = path.join(dir, 'r.img')
  const r = await interrupted(store, 'restore', ['restore', store, '--at', 'a', '--out', out])
  t.ok(r.signalled, 'SIGINT while the daemon ran the restore')
  t.equal(r.code, 130, 'the command exits 130')
  t.match(r.stderr, new RegExp(`^logdisk: restore interrupted; nothing was written to ${out}\\n$`), `one line: ${r.stderr.trim()}`)
  await new Promise(resolve => setTimeout(resolve, 1500)) // what the daemon would have written by now
  t.notOk(fs.existsSync(out) || fs.existsSync(`${out}.partial`), 'the daemon stopped: no image, no .partial, also a moment later')
  const rerun = await logdisk('restore', store, '--at', 'a', '--out', out)
  t.equal(rerun.code, 0, `a rerun is not refused: ${rerun.stderr}`)
  t.ok(fs.readFileSync(out).subarray(0, data.length).equals(data), 'and restores every byte')

  // Pool remove: v2 drained onto v3 and interrupted halfway.
  const json = async (): Promise<Array<{ dir: string, segments: number }>> => JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout).volumes
  const onV2 = (await json()).find(v => v.dir === volume)?.segments ?? 0
  t.ok(onV2 >= 6, `segments on ${volume}: ${onV2} (${JSON.stringify(await json())})`)
  // Interrupted once the first segment left v2 (each step of the drain takes 100 ms more).
  const p = await interrupted(store, 'pool remove', ['pool', 'remove', store, volume])
  t.ok(p.signalled, 'SIGINT while the daemon drained v2')
  t.equal(p.code, 130, `pool remove interrupted exits 130: ${p.stderr.trim()}`)
  t.match(p.stderr, /^logdisk: pool remove interrupted; \S+ stays in the pool, with the segments not moved off it yet; pool remove again drains the rest\n$/, 'in one line')
  t.ok((await json()).some(v => v.dir === volume), 'the volume is still in the pool')
  const again = await logdisk('pool', 'remove', store, volume)
  t.equal(again.code, 0, `pool remove again is not refused as draining, and finishes: ${again.stderr}`)
  t.notOk((await json()).some(v => v.dir === volume), 'the volume left the pool')

  // Compact (of 16 MiB written again, no history kept), interrupted halfway.
  t.equal((await logdisk('policy', 'set', store, 'history.keep=0', 'compact.every=0')).code, 0)
  const rewrite = crypto.randomBytes(16 * MiB)
  fs.writeFileSync(path.join(mnt, 'current.img'), rewrite, { flag: 'r+' })
  rewrite.copy(data)
  t.equal((await logdisk('sync', store)).code, 0)
  const c = await interrupted(store, 'compact', ['compact', store])
  t.ok(c.signalled, 'SIGINT while the daemon compacted')
  t.equal(c.code, 130)
  t.match(c.stderr, /^logdisk: compact interrupted \(SIGINT\); the mount daemon \(pid \d+\) runs it to its end: it does not stop halfway/, `compact says the daemon finishes it: ${c.stderr.trim()}`)

  t.ok((await jobsOf(store)).some(j => j.op === 'compact'), 'status shows the compaction going on')
  while ((await jobsOf(store)).length > 0) await new Promise(resolve => setTimeout(resolve, 100))
  const done = await logdisk('compact', store, '--json')
  t.equal(done.code, 0, `compact again once the daemon finished: ${done.stderr}`)
  const image = fs.readFileSync(path.join(mnt, 'current.img'))
  t.ok(image.subarray(0, data.length).equals(data), 'the volume reads what was written')
  const verified = await logdisk('verify', store)
  t.equal(verified.code, 0, `verify is clean: ${verified.stderr}${verified.stdout}`)
})

/** Waits until `cond` holds (polled), or fails after `ms` with `what`. */
async function until (cond: () => boolean | Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** How a promise settled within `ms`: 'finished', the error it rejected with, or 'still waiting'. */
async function settledWithin (p: Promise<unknown>, ms: number): Promise<'finished' | 'still waiting' | LogdiskError> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'still waiting'>(resolve => { timer = setTimeout(() => resolve('still waiting'), ms) })
  try {
    return await Promise.race([p.then(() => 'finished' as const, (e: LogdiskError) => e), late])
  } finally {
    clearTimeout(timer)
  }
}

/** A child process and how it ended (its exit code, or null when a signal ended it), with its stderr. */
function started (args: string[], opts: { stdin?: 'pipe' | 'ignore' } = {}): { child: ReturnType<typeof spawn>, stderr: () => string, ended: Promise<number | null>, exited: () => boolean } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: [opts.stdin ?? 'ignore', 'ignore', 'pipe'] })
  let stderr = ''
  let exited = false
  child.stderr!.on('data', d => { stderr += String(d) })
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000) // never a hang
  const ended = new Promise<number | null>(resolve => child.on('exit', code => { exited = true; clearTimeout(timer); resolve(code) }))
  return { child, stderr: () => stderr, ended, exited: () => exited }
}

// A job still waiting for the store's maintenance lock (behind a compaction or a verify) when
// its command was interrupted stopped only once it had the lock and reached its first step,
// perhaps minutes later (helper-78's note in CLI.md). The wait gives up at once now.
t.test('the library: a job waiting for the maintenance lock stops at once when asked; a cancel that came before its job stops it as it begins', { timeout: 120_000 }, async t => {
  const dir = tmpDir('interrupt-waiting')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const storeDir = path.join(dir, 's')
  const [v2, v3] = [path.join(dir, 'v2'), path.join(dir, 'v3')]
  await must(process.execPath, CLI, 'create', storeDir, '--size', '32M', '--segment-size', '2M', '--pool', v2, '--pool', v3)
  const { store } = await openStore(storeDir)
  try {
    await store.write(0, crypto.randomBytes(16 * MiB))
    await store.snapshot({ name: 'a' })
    const onV2 = async (): Promise<number> => ((await ops['pool list'](store, {}, {})) as { volumes: Array<{ dir: string, segments: number }> }).volumes.find(v => v.dir === v2)?.segments ?? -1
    await store.discardNextSegment() // what a drain removes before it waits: counted out here
    const before = await onV2()
    t.ok(before > 0, `segments on v2: ${before}`)
    // A pass that holds the lock (as a long compaction does) until released.
    const maintenance = (store as unknown as { p: { lifeCycle: { maintenance: { run: (f: () => Promise<void>) => Promise<void> } } } }).p.lifeCycle.maintenance
    let release = (): void => {}
    const pass = maintenance.run(() => new Promise<void>(resolve => { release = resolve }))
    const out = path.join(dir, 'r.img')
    try {
      // Asked through its context: the command's own Ctrl-C, or (in the daemon) its client gone.
      let asked = false
      const verifying = ops.verify(store, { job: 'v' }, { cancelled: () => asked })
      asked = true
      const v = await settledWithin(verifying, 15_000)
      t.equal(typeof v === 'string' ? v : v.code, 'INTERRUPTED', 'verify waiting behind the pass stopped without waiting for it')
      t.match(typeof v === 'string' ? v : v.message, /^verify interrupted; the store was not checked to its end$/)
      // Asked by the op `cancel` (Ctrl-C of a command whose job the daemon runs).
      const removing = ops['pool remove'](store, { dir: v2, job: 'p' }, {})
      t.same(await ops.cancel(store, { job: 'p' }, {}), { asked: true }, 'cancel found the waiting job')
      const p = await settledWithin(removing, 15_000)
      t.equal(typeof p === 'string' ? p : p.code, 'INTERRUPTED', 'pool remove waiting behind the pass stopped without waiting for it')
      t.match(typeof p === 'string' ? p : p.message, /^pool remove interrupted; \S+ stays in the pool/)
      // A cancel that reached the daemon before its job began (Ctrl-C at once): the job stops as it begins.
      t.same(await ops.cancel(store, { job: 'r' }, {}), { asked: false })
      const r = await settledWithin(ops.restore(store, { at: 'a', out, job: 'r' }, {}), 15_000)
      t.equal(typeof r === 'string' ? r : r.code, 'INTERRUPTED', 'a restore cancelled before it began stopped as it began')
    } finally {
      release()
      await pass
    }
    t.notOk(fs.existsSync(out) || fs.existsSync(`${out}.partial`), 'the restore wrote nothing')
    t.equal(await onV2(), before, 'nothing was moved off v2, also once the pass ended')
    t.ok(((await ops['pool list'](store, {}, {})) as { volumes: Array<{ dir: string }> }).volumes.some(v => v.dir === v2), 'v2 stays in the pool')
    const report = await ops.verify(store, {}, {}) as { ok?: boolean, problems?: unknown[] }
    t.ok(report, 'a verify now runs to its end')
    t.same((await ops['pool remove'](store, { dir: v2 }, {}) as { moved: number }).moved, before, 'and pool remove drains v2')
  } finally {
    await store.close()
  }
})

t.test('Ctrl-C of verify and pool remove waiting behind another verify the daemon runs ends them at once', { skip, timeout: 300_000 }, async t => {
  const dir = tmpDir('interrupt-behind-verify')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 's')
  const mnt = path.join(dir, 'mnt')
  const [v2, v3] = [path.join(dir, 'v2'), path.join(dir, 'v3')]
  await must(process.execPath, CLI, 'create', store, '--size', '512M', '--segment-size', '2M', '--pool', v2, '--pool', v3)
  // 192 segments, written here (faster than through the mount): a verify takes a step per
  // segment, each 100 ms more under job-slow, so it holds the maintenance lock for 19 s or more.
  // (Not a compaction: under job-slow its steps come a hundred at a time without a turn of the
  // daemon's event loop in between, and the requests of the commands waited behind them.)
  {
    const { store: s } = await openStore(store)
    try {
      const chunk = crypto.randomBytes(4 * MiB)
      for (let i = 0; i < 96; i++) await s.write(i * 4 * MiB, chunk)
    } finally {
      await s.close()
    }
  }
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'job-slow' } })
  t.equal(mounted.code, 0, mounted.stderr)
  // The segment files on v2, but the newest: a drain first removes the one made ahead of the next roll.
  const before = fs.readdirSync(v2, { recursive: true }).map(String).filter(f => /seg-\d+\.log$/.test(f)).sort().slice(0, -1)
  t.ok(before.length > 100, `segments on v2: ${before.length}`)
  // Asked of the daemon straight (a CLI per look would start slowly on a loaded machine).
  const socket = String(JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')).socket)
  const jobs = async (): Promise<Array<{ op: string, done: number }>> => (await request<{ jobs: Array<{ op: string, done: number }> }>(socket, 'status', {}, 30_000)).jobs

  // The verify that holds the lock, asked of the daemon as a command would (with a job id).
  const holding = request(socket, 'verify', { job: 'holder' }, 280_000).then(() => 'finished', (e: LogdiskError) => e.code)
  await until(async () => (await jobs()).some(j => j.op === 'verify' && j.done > 0), 'the first verify to run')
  const verify = started(['verify', store])
  const remove = started(['pool', 'remove', store, v2])
  await until(async () => verify.exited() || remove.exited() || (await jobs()).length === 3, 'a second verify and pool remove to wait in the daemon')
  const waiting = await jobs()
  t.equal(waiting.length, 3, `the first verify runs, the second and pool remove wait for the lock: ${JSON.stringify(waiting)}`)
  t.equal(waiting.filter(j => j.done === 0).length, 2, 'two jobs have not made a step')
  verify.child.kill('SIGINT')
  remove.child.kill('SIGINT')
  const [vc, rc] = await Promise.all([verify.ended, remove.ended])
  const after = await jobs()
  t.same(after.map(j => j.op), ['verify'], `both ended while the first verify still ran (before, each waited for its end): ${JSON.stringify(after)}`)
  t.equal(vc, 130, 'the second verify exits 130')
  t.match(verify.stderr(), /^logdisk: verify interrupted; the store was not checked to its end\n$/, `in one line: ${verify.stderr().trim()}`)
  t.equal(rc, 130, 'pool remove exits 130')
  t.match(remove.stderr(), /^logdisk: pool remove interrupted; \S+ stays in the pool, with the segments not moved off it yet; pool remove again drains the rest\n$/, `in one line: ${remove.stderr().trim()}`)
  const left = new Set(fs.readdirSync(v2, { recursive: true }).map(String))
  t.same(before.filter(f => !left.has(f)), [], 'nothing was moved off v2')
  // The first one is stopped too (at its next step), as its command's Ctrl-C would.
  await request(socket, 'cancel', { job: 'holder' }, 30_000)
  t.equal(await holding, 'INTERRUPTED', 'the first verify stops when asked')
})

// A receive Ctrl-C'd while it still read its stream was killed by the signal and left its spool
// (as large as the stream had come) until a later receive removed it as dead.
t.test('Ctrl-C of receive while it reads its stream removes its spool and exits 130', { timeout: 120_000 }, async t => {
  const dir = tmpDir('interrupt-spooling')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const existing = path.join(dir, 's')
  await must(process.execPath, CLI, 'create', existing, '--size', '32M', '--segment-size', '2M')
  for (const [store, where, what] of [[existing, existing, 'into a store'], [path.join(dir, 'new'), dir, 'into a store it would create']] as const) {
    const spools = (): string[] => fs.readdirSync(where).filter(f => f.endsWith('.spool'))
    const r = started(['receive', store, '--in', '-'], { stdin: 'pipe' })
    r.child.stdin!.on('error', () => undefined)
    r.child.stdin!.write(crypto.randomBytes(MiB)) // and the stream goes on: stdin stays open
    await until(() => r.exited() || spools().some(f => fs.statSync(path.join(where, f)).size >= MiB), 'the stream in the spool')
    t.notOk(r.exited(), `receive ${what} still reads its stream: ${r.stderr()}`)
    r.child.kill('SIGINT')
    const code = await r.ended
    t.equal(code, 130, `receive ${what} exits 130`)
    t.match(r.stderr(), new RegExp(`^logdisk: receive interrupted; the stream was still being read: nothing was applied to ${store}, and its spool was removed\\n$`), `in one line: ${r.stderr().trim()}`)
    t.same(spools(), [], 'no spool is left')
  }
  t.notOk(fs.existsSync(path.join(dir, 'new')), 'the store it would create was not created')
})

// A receive Ctrl-C'd while the daemon applied its spooled stream ended at once (the daemon runs
// a receive to its end) and left the spool for good; a later receive removed it as dead (its
// owner's pid gone) while the daemon might still read it.
t.test('Ctrl-C of receive while the daemon applies its spooled stream: the daemon removes the spool, and no later receive removes it before', { skip, timeout: 300_000 }, async t => {
  const dir = tmpDir('interrupt-receive-spool')
  t.teardown(() => cleanup(dir, t))
  const source = path.join(dir, 'src')
  const store = path.join(dir, 'r')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', source, '--size', '64M', '--segment-size', '2M')
  {
    const { store: s } = await openStore(source)
    try {
      await s.write(0, crypto.randomBytes(40 * MiB))
      await s.snapshot({ name: 'a' })
    } finally {
      await s.close()
    }
  }
  const stream = path.join(dir, 'a.stream')
  await must(process.execPath, CLI, 'send', source, 'a', '--out', stream)
  await must(process.execPath, CLI, 'create', store, '--size', '64M', '--segment-size', '2M')
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'job-slow' } })
  t.equal(mounted.code, 0, mounted.stderr)
  const spools = (): string[] => fs.readdirSync(store).filter(f => f.endsWith('.spool'))

  const r = started(['receive', store, '--in', '-'], { stdin: 'pipe' })
  r.child.stdin!.on('error', () => undefined)
  fs.createReadStream(stream).pipe(r.child.stdin!)
  await until(async () => r.exited() || (await jobsOf(store)).some(j => j.op === 'receive' && j.done > 0), 'the daemon to apply the stream')
  t.notOk(r.exited(), `receive waits for the daemon: ${r.stderr()}`)
  t.same(spools(), [`receive-${daemonPid(store)}.spool`], 'the daemon took the spool over')
  r.child.kill('SIGINT')
  t.equal(await r.ended, 130, 'the command ends at once')
  t.match(r.stderr(), /^logdisk: receive interrupted \(SIGINT\); the mount daemon \(pid \d+\) runs it to its end/, r.stderr().trim())
  // A later receive (any: it removes the spools of receives that are gone first).
  const later = await logdisk('receive', store, '--in', path.join(dir, 'missing.stream'))
  t.equal(later.code, 1, `a later receive: ${later.stderr.trim()}`)
  if ((await jobsOf(store)).some(j => j.op === 'receive')) t.same(spools(), [`receive-${daemonPid(store)}.spool`], 'it left the spool the daemon still reads')
  else t.comment('the daemon had finished before the later receive looked')
  await until(async () => !(await jobsOf(store)).some(j => j.op === 'receive'), 'the daemon to finish the receive', 120_000)
  t.same(spools(), [], 'no spool is left once the daemon finished')
  const snaps = await logdisk('snapshots', store, '--json')
  t.ok(JSON.parse(snaps.stdout).some((s: { name: string }) => s.name === 'a'), `the stream was received whole: ${snaps.stdout}`)
  const log = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8')
  t.notMatch(log, /ENOENT|receive-\d+\.spool/, 'the daemon read its spool to its end')
})

// `send --out - | receive` interrupted as a whole (SIGINT to both): the receiving end went away
// before the send job's next step, and send exited 1 with "the receiving end of the stream went
// away" rather than 130 (helper-78).
t.test('send --out - | receive, Ctrl-C to both: send exits 130 with its interrupted line', { skip, timeout: 300_000 }, async t => {
  const dir = tmpDir('interrupt-pipeline')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 's')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '64M', '--segment-size', '2M')
  {
    const { store: s } = await openStore(store)
    try {
      await s.write(0, crypto.randomBytes(48 * MiB))
      await s.snapshot({ name: 'a' })
    } finally {
      await s.close()
    }
  }
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'job-slow' } })
  t.equal(mounted.code, 0, mounted.stderr)
  const codes = path.join(dir, 'codes')
  const q = (s: string): string => `'${s}'`
  // A pipeline as a shell runs it; each side's exit code written once both ended.
  const script = `${q(process.execPath)} ${q(CLI)} send ${q(store)} a --out - 2>${q(path.join(dir, 'send.err'))} | ${q(process.execPath)} ${q(CLI)} receive ${q(path.join(dir, 'r'))} --in - 2>${q(path.join(dir, 'receive.err'))}; echo "\${PIPESTATUS[@]}" > ${q(codes)}`
  const shell = spawn('bash', ['-c', script], { stdio: 'ignore' })
  const timer = setTimeout(() => shell.kill('SIGKILL'), 120_000)
  const shellEnded = new Promise(resolve => shell.on('exit', resolve))
  t.teardown(() => { clearTimeout(timer); shell.kill('SIGKILL') })
  const sides = (): { send?: number, receive?: number } => {
    let kids: number[] = []
    try { kids = fs.readFileSync(`/proc/${shell.pid}/task/${shell.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) } catch {}
    const which = (word: string): number | undefined => kids.find(k => { try { return fs.readFileSync(`/proc/${k}/cmdline`, 'utf8').split('\0').includes(word) } catch { return false } })
    return { send: which('send'), receive: which('receive') }
  }
  await until(async () => (await jobsOf(store)).some(j => j.op === 'send' && j.done > 0) && sides().receive !== undefined, 'the stream to flow')
  const { send, receive } = sides()
  // The receiving end stops reading: the send job waits on the full pipe (back-pressure),
  // where no progress step comes to stop it; seen as its progress standing still.
  process.kill(receive!, 'SIGSTOP')
  let last = -1
  let still = 0
  await until(async () => {
    const done = (await jobsOf(store)).find(j => j.op === 'send')?.done ?? -2
    still = done === last ? still + 1 : 0
    last = done
    await new Promise(resolve => setTimeout(resolve, 500))
    return still >= 4
  }, 'the send job to wait on the full pipe')
  // Ctrl-C to the whole pipeline.
  process.kill(send!, 'SIGINT')
  process.kill(receive!, 'SIGINT')
  process.kill(receive!, 'SIGCONT')
  await shellEnded
  const [sendCode, receiveCode] = fs.readFileSync(codes, 'utf8').trim().split(' ').map(Number)
  const sendErr = fs.readFileSync(path.join(dir, 'send.err'), 'utf8')
  t.equal(sendCode, 130, `send exits 130: ${sendErr.trim()}`)
  t.match(sendErr, /^logdisk: send interrupted; the stream ended unfinished\n$/, 'with its interrupted line')
  t.equal(receiveCode, 130, `receive exits 130: ${fs.readFileSync(path.join(dir, 'receive.err'), 'utf8').trim()}`)
  await until(async () => !(await jobsOf(store)).some(j => j.op === 'send'), 'the daemon to end the send job', 30_000)
  t.notOk(fs.existsSync(path.join(dir, 'r')), 'nothing was received')
})
