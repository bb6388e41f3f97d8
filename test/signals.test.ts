// Signals and unmount (issue 10 item 4, issue 9 defect 6): a signal always ends in a clean stop,
// a refused unmount never poisons the next one, and a mount is detached behind its daemon's
// back only when that daemon is gone. Real FUSE and loop devices; runs as root.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, cleanup, daemonPid, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'
import { isAlive } from '../src/daemon/paths'

const skip = canMount()
t.setTimeout(900_000) // a loaded machine runs each CLI start slowly; each run has its own bound

/** `mount --foreground` with extra environment; resolves once mounted, with its output so far. */
async function mountFg (store: string, mnt: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess, output: () => string, exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, 'mount', store, mnt, '--foreground'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  child.stdout!.on('data', d => { out += d })
  child.stderr!.on('data', d => { out += d })
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  const deadline = Date.now() + 60_000
  while (!out.includes('"msg":"mounted"')) {
    if (child.exitCode !== null) throw new Error(`mount --foreground exited ${child.exitCode}: ${out}`)
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`mount --foreground did not mount: ${out}`) }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { child, output: () => out, exited }
}

/** Resolves with the exit code, or 'timeout' after `ms`. */
function within (exited: Promise<number | null>, ms: number): Promise<number | null | 'timeout'> {
  return Promise.race([exited, new Promise<'timeout'>(resolve => setTimeout(() => resolve('timeout'), ms).unref())])
}

function writeSynced (img: string, data: Buffer, offset: number): void {
  const fd = fs.openSync(img, 'r+')
  fs.writeSync(fd, data, 0, data.length, offset)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

t.test('SIGTERM with a loop device attached waits, names it, and stops once it is detached', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('sig-wait')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const d = await mountFg(store, mnt, { LOGDISK_STOP_WAIT_MS: '60000' })
  const data = Buffer.alloc(8192, 0x5a)
  writeSynced(path.join(mnt, 'current.img'), data, 4096)
  const loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  d.child.kill('SIGTERM')
  const deadline = Date.now() + 20_000
  while (!d.output().includes('waiting up to') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
  t.match(d.output(), new RegExp(`waiting up to 60 s for open images to be closed: current.img is open \\(held by ${loop}`), 'the daemon says which image is open and what holds it')
  t.equal(await within(d.exited, 500), 'timeout', 'it keeps serving while the loop device is attached')
  t.ok(isMounted(mnt), 'still mounted during the wait')
  await must('losetup', '-d', loop)
  t.equal(await within(d.exited, 30_000), 0, 'exits 0 once the loop device is detached')
  t.notOk(isMounted(mnt), 'the mount is gone')
  const status = JSON.parse((await logdisk('status', store, '--json')).stdout)
  t.equal(status.index.checkpointSeq, status.index.seq, 'the index was checkpointed on the way out')
  t.equal(status.recovery.replayedEntries, 0, 'nothing to replay')
})

t.test('SIGTERM stops after the bounded wait even while an image stays open; fsynced data survives', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('sig-bound')
  let loop = ''
  t.teardown(async () => { if (loop) await run('losetup', ['-d', loop]); await cleanup(dir) })
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const d = await mountFg(store, mnt, { LOGDISK_STOP_WAIT_MS: '1500' })
  const data = Buffer.alloc(12288, 0xc3)
  writeSynced(path.join(mnt, 'current.img'), data, 8192)
  loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  const started = Date.now()
  d.child.kill('SIGTERM')
  t.equal(await within(d.exited, 30_000), 0, 'the daemon exits 0')
  t.ok(Date.now() - started >= 1400, `it waited for the open image first (${Date.now() - started} ms)`)
  t.match(d.output(), /stopping with images still open; their I\/O fails once the mount is detached and its connection ended \(within \d+ s\): current.img is open/, 'the forced stop is said, with the image')
  t.notOk(isMounted(mnt), 'the mount is gone')
  const back = Buffer.alloc(data.length)
  const r = await run('dd', [`if=${loop}`, 'bs=4096', 'skip=2', 'count=3', 'iflag=direct', 'status=none'], { timeoutMs: 20_000 })
  t.not(r.code, 0, 'I/O through the abandoned loop device fails (it does not hang)')
  await must('losetup', '-d', loop)
  loop = ''
  const restored = path.join(dir, 'now.img')
  const status = JSON.parse((await logdisk('status', store, '--json')).stdout)
  const r2 = await logdisk('restore', store, '--at', String(status.index.seq), '--out', restored)
  t.equal(r2.code, 0, `the store opens again: ${r2.stderr}`)
  const fd = fs.openSync(restored, 'r')
  fs.readSync(fd, back, 0, back.length, 8192)
  fs.closeSync(fd)
  t.ok(back.equals(data), 'the fsynced write is in the store')
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
})

t.test('a second signal stops at once', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('sig-second')
  let loop = ''
  t.teardown(async () => { if (loop) await run('losetup', ['-d', loop]); await cleanup(dir) })
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const d = await mountFg(store, mnt, { LOGDISK_STOP_WAIT_MS: '120000' })
  loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  d.child.kill('SIGTERM')
  await new Promise(resolve => setTimeout(resolve, 700))
  t.equal(d.child.exitCode, null, 'the first signal waits')
  const started = Date.now()
  d.child.kill('SIGINT')
  t.equal(await within(d.exited, 20_000), 0, 'the second signal ends it')
  t.ok(Date.now() - started < 15_000, `promptly (${Date.now() - started} ms)`)
  t.match(d.output(), /second signal: stopping now/)
  t.notOk(isMounted(mnt), 'the mount is gone')
})

t.test('a signal right after an image is closed (RELEASE in flight) always stops', { skip, timeout: 240_000 }, async t => {
  const dir = tmpDir('sig-release')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  for (let i = 0; i < 5; i++) {
    const d = await mountFg(store, mnt, { LOGDISK_STOP_WAIT_MS: '20000' })
    const fd = fs.openSync(path.join(mnt, 'current.img'), 'r+')
    fs.writeSync(fd, Buffer.alloc(4096, i + 1), 0, 4096, i * 4096)
    fs.closeSync(fd)
    d.child.kill(i % 2 === 0 ? 'SIGTERM' : 'SIGINT') // no pause: the kernel's RELEASE may not have arrived
    t.equal(await within(d.exited, 30_000), 0, `round ${i}: exits 0`)
    t.notOk(isMounted(mnt), `round ${i}: unmounted`)
    t.notMatch(d.output(), /not unmounting/, `round ${i}: the signal was not dropped`)
  }
})

t.test('a refused unmount does not poison the next one; the holder is named', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('unmount-busy')
  let loop = ''
  t.teardown(async () => { if (loop) await run('losetup', ['-d', loop]); await cleanup(dir) })
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const pid = daemonPid(store)
  loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  // A signal that waits, then the loop device stays: the signal path must not break unmount.
  const busy = await logdisk('unmount', mnt)
  t.equal(busy.code, 1)
  t.equal(busy.stderr.trim().split('\n').length, 1, 'one line')
  t.match(busy.stderr, new RegExp(`is busy: current.img is open \\(held by ${loop}\\); release with: losetup -d ${loop}`), 'names the loop device and what to run')
  t.ok(isMounted(mnt), 'still mounted')
  const again = await logdisk('unmount', mnt)
  t.match(again.stderr, /is busy/, 'refused again, the same way')
  await must('losetup', '-d', loop)
  loop = ''
  const started = Date.now()
  const ok = await logdisk('unmount', mnt)
  t.equal(ok.code, 0, `unmount works once the loop device is gone: ${ok.stderr}`)
  t.ok(Date.now() - started < 20_000, `without waiting out a timeout (${Date.now() - started} ms)`)
  t.notOk(isMounted(mnt))
  t.notOk(isAlive(pid), 'the daemon exited')
})

// fuse-native: a dead daemon leaves its mount for `logdisk unmount` to remove (on devfuse the
// watchdog detaches it at once: test/devfuse-mount.test.ts).
t.test('unmount never cuts off a live daemon that does not answer; a dead one\'s mount is removed', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('unmount-stuck')
  let loop = ''
  let stopped = 0
  t.teardown(async () => {
    if (stopped) try { process.kill(stopped, 'SIGCONT') } catch {}
    if (loop) await run('losetup', ['-d', loop])
    await cleanup(dir)
  })
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  t.equal((await logdisk('mount', store, mnt, '--transport', 'fuse-native')).code, 0)
  const pid = daemonPid(store)
  process.kill(pid, 'SIGSTOP')
  stopped = pid
  const r = await run(process.execPath, [CLI, 'unmount', mnt], { env: { LOGDISK_ANSWER_WAIT_MS: '1500' } })
  t.equal(r.code, 1, 'refused')
  t.match(r.stderr, new RegExp(`the daemon \\(pid ${pid}\\) serving .* does not answer; nothing was unmounted`), r.stderr)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  process.kill(pid, 'SIGCONT')
  stopped = 0
  await new Promise(resolve => setTimeout(resolve, 1500)) // it now reads the abandoned request
  t.ok(isMounted(mnt), 'the mount of the live daemon is still there')
  t.ok(isAlive(pid), 'and its daemon runs: the abandoned request did not unmount it')
  t.equal(fs.readdirSync(mnt).includes('current.img'), true, 'and it still serves')

  loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  process.kill(pid, 'SIGKILL')
  await new Promise(resolve => setTimeout(resolve, 300))
  const stale = await logdisk('unmount', mnt)
  t.equal(stale.code, 0, stale.stderr)
  t.match(stale.stdout, new RegExp(`removed the stale mount at .* \\(its daemon \\(pid ${pid}\\) is gone\\); current.img is still held by ${loop}`), 'says what still holds the dead mount\'s image')
  t.notOk(isMounted(mnt), 'gone')
})
