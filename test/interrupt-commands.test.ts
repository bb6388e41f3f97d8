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
import { Store } from '../src/store'
import { CLI, canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

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
