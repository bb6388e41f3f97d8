// The one lock file of logdisk (src/store/lock-file.ts), which the pool volume marker and a
// parent's clones.json both take. Before, each had its own: the marker's removed a stale lock
// with a plain unlink after reading it, so two waiters that read the same dead holder could
// both go in (helper-94). Here: mutual exclusion, a dead holder's lock taken over, two takers
// of one stale lock of which only one goes in, and a live holder refused in one line (BUSY).
import { spawn, spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { lockFileHooks, withLockFile, type LockFileOptions } from '../src/store/lock-file'

t.setTimeout(120_000)
const DIST_LOCK = path.resolve('dist/src/store/lock-file.js')

function scratch (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'logdisk-lock-file-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

const opts = (waitMs = 20_000): LockFileOptions => ({
  waitMs,
  pollMs: 2,
  busyMessage: who => `the counter is locked by ${who}; try again`,
  failMessage: err => `cannot take the counter's lock: ${err.message}`
})

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** A pid that ran on this host and is gone. */
const deadPid = (): number => Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString())

/** Counts its holders: `max` is the most that were inside at once. */
function holders (): { inside: number, max: number, enter: () => void, leave: () => void } {
  const h = {
    inside: 0,
    max: 0,
    enter: () => { h.inside++; h.max = Math.max(h.max, h.inside) },
    leave: () => { h.inside-- }
  }
  return h
}

/** A read-modify-write of the counter in `file`, awaiting between the read and the write. */
async function increment (file: string): Promise<void> {
  const n = Number(fs.readFileSync(file, 'utf8'))
  await sleep(Math.random() * 3)
  fs.writeFileSync(file, String(n + 1))
}

const leftovers = (dir: string): string[] => fs.readdirSync(dir).filter(f => f.startsWith('lock'))

t.test('many concurrent holders in one process: each read-modify-write of the counter goes alone', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const counter = path.join(dir, 'counter')
  fs.writeFileSync(counter, '0')
  const h = holders()
  await Promise.all(Array.from({ length: 50 }, async () => withLockFile(lock, async () => {
    h.enter()
    try { await increment(counter) } finally { h.leave() }
  }, opts())))
  t.equal(fs.readFileSync(counter, 'utf8'), '50', 'no increment lost')
  t.equal(h.max, 1, 'never two holders at once')
  t.same(leftovers(dir), [], 'the lock released')
})

t.test('holders in four processes (the blocking form the marker and clones.json take): no increment lost', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const counter = path.join(dir, 'counter')
  fs.writeFileSync(counter, '0')
  const script = `const { withLockFileSync } = require(${JSON.stringify(DIST_LOCK)}); const fs = require('fs')
const o = { waitMs: 60000, pollMs: 1, busyMessage: w => 'busy ' + w, failMessage: e => e.message }
for (let i = 0; i < 25; i++) withLockFileSync(${JSON.stringify(lock)}, () => {
  const n = Number(fs.readFileSync(${JSON.stringify(counter)}, 'utf8'))
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1)
  fs.writeFileSync(${JSON.stringify(counter)}, String(n + 1))
}, o)`
  const codes = await Promise.all(Array.from({ length: 4 }, async () => new Promise<number | null>(resolve => {
    const c = spawn(process.execPath, ['-e', script], { stdio: 'inherit', timeout: 90_000 })
    c.on('exit', code => resolve(code))
  })))
  t.same(codes, [0, 0, 0, 0], 'all four ran to their end')
  t.equal(fs.readFileSync(counter, 'utf8'), '100', 'no increment lost')
  t.same(leftovers(dir), [], 'the lock released')
})

t.test('a lock whose holder died on this host is taken over at once', async t => {
  for (const content of [`${deadPid()} ${os.hostname()}\n`, `${deadPid()} ${os.hostname()} 0123abcd\n`]) {
    const dir = scratch(t)
    const lock = path.join(dir, 'lock')
    fs.writeFileSync(lock, content)
    const started = Date.now()
    const got = await withLockFile(lock, () => fs.readFileSync(lock, 'utf8'), opts(5_000))
    t.ok(Date.now() - started < 1000, `in ${Date.now() - started} ms (${content.trim()})`)
    t.match(got, new RegExp(`^${process.pid} ${os.hostname()} [0-9a-f]+\\n$`), 'the lock names this holder while it runs')
    t.same(leftovers(dir), [], 'released, and no claim file left')
  }
})

t.test('a taker that died holding its claim on a dead holder\'s lock: both are taken over', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const stale = `${deadPid()} ${os.hostname()} 0123abcd`
  fs.writeFileSync(lock, `${stale}\n`)
  const claim = `${lock}.takeover-${crypto.createHash('sha256').update(stale).digest('hex').slice(0, 16)}`
  fs.writeFileSync(claim, `${deadPid()} ${os.hostname()} 4567cdef\n`)
  const started = Date.now()
  let ran = false
  await withLockFile(lock, () => { ran = true }, opts(5_000))
  t.ok(ran && Date.now() - started < 1000, `went in, in ${Date.now() - started} ms`)
  t.same(leftovers(dir), [], 'released, and the dead taker\'s claim removed')
})

t.test('two waiters that read the same dead holder: one takes it over, the other waits for it', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const stale = `${deadPid()} ${os.hostname()}`
  fs.writeFileSync(lock, `${stale}\n`)
  const h = holders()
  // A has read the stale holder and is stopped before its takeover until B has taken the lock
  // over and is inside; then A goes on with the stale holder it read.
  let bInside!: () => void
  const bIsInside = new Promise<void>(resolve => { bInside = resolve })
  const seen: string[] = []
  lockFileHooks.beforeTakeover = async (_lock, holder) => {
    seen.push(holder)
    if (seen.length === 1) await bIsInside
  }
  t.teardown(() => { lockFileHooks.beforeTakeover = undefined })
  const order: string[] = []
  const a = withLockFile(lock, async () => {
    h.enter(); order.push('A in')
    await sleep(20)
    order.push('A out'); h.leave()
  }, opts())
  const b = withLockFile(lock, async () => {
    h.enter(); order.push('B in')
    bInside()
    await sleep(300) // A takes its stale holder over meanwhile
    order.push('B out'); h.leave()
  }, opts())
  await Promise.all([a, b])
  t.same(seen.slice(0, 2), [stale, stale], 'both read the same stale holder')
  t.equal(h.max, 1, 'never both inside')
  t.same(order, ['B in', 'B out', 'A in', 'A out'], 'A went in after B was done')
  t.same(leftovers(dir), [], 'released, and no claim file left')
})

t.test('many waiters on one dead holder\'s lock, round after round: one at a time inside', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const counter = path.join(dir, 'counter')
  for (let round = 0; round < 20; round++) {
    fs.writeFileSync(lock, `${deadPid()} ${os.hostname()}\n`)
    fs.writeFileSync(counter, '0')
    const h = holders()
    await Promise.all(Array.from({ length: 8 }, async () => withLockFile(lock, async () => {
      h.enter()
      try { await increment(counter) } finally { h.leave() }
    }, opts())))
    if (h.max !== 1 || fs.readFileSync(counter, 'utf8') !== '8') {
      t.fail(`round ${round}: ${h.max} inside at once, counter ${fs.readFileSync(counter, 'utf8')}`)
      return
    }
  }
  t.pass('20 rounds of 8 waiters: one inside at a time, no increment lost')
  t.same(leftovers(dir), [], 'released, and no claim file left')
})

t.test('a lock held by a live process: the waiter is refused after its wait, in one line, BUSY', async t => {
  const dir = scratch(t)
  const lock = path.join(dir, 'lock')
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' })
  t.teardown(() => { holder.kill('SIGKILL') })
  fs.writeFileSync(lock, `${holder.pid} ${os.hostname()} 0123abcd\n`)
  const started = Date.now()
  let ran = false
  let err: unknown
  try { await withLockFile(lock, () => { ran = true }, opts(400)) } catch (e) { err = e }
  t.notOk(ran, 'it never went in')
  t.ok(isLogdiskError(err, 'BUSY'), `BUSY (${String(err)})`)
  t.equal((err as Error).message, `the counter is locked by process ${holder.pid} on ${os.hostname()}; try again`, 'one line naming the holder')
  t.ok(Date.now() - started >= 400, `after its wait (${Date.now() - started} ms)`)
  t.equal(fs.readFileSync(lock, 'utf8'), `${holder.pid} ${os.hostname()} 0123abcd\n`, 'the live holder\'s lock stays')
})
