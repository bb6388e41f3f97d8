// `logdisk unmount` printed "unmounted" and exited 0 while the daemon logged "unmount refused"
// with the error that had failed closing the store (its index could not be written: ENOSPC):
// the daemon answered before it stopped, and the command only waited for the process to go
// (helper-97's D2). Now the index is written before the daemon answers (a store whose index
// cannot be written refuses the unmount, its mount still serving), and a close that fails
// after the answer leaves daemon.json, which the command reads as "not closed cleanly".
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, cleanup, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'
import { readAt, writeAt } from './helpers/image-file'
import { isAlive } from '../src/process-alive'

const skip = canMount()
const MiB = 1024 * 1024
const data = (seed: string, bytes: number): Buffer => {
  const key = crypto.createHash('sha256').update(seed).digest()
  return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes))
}
const withFsync = (img: string, offset: number, bytes: Buffer): void => {
  writeAt(img, offset, bytes)
  const fd = fs.openSync(img, 'r+')
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}

t.test('closing the store fails after the daemon answered: unmount exits non-zero and says the store was not closed cleanly', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('unmount-close-fails')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const m = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'close-fails' } })
  t.equal(m.code, 0, `mounted: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const written = data('close-fails', MiB)
  withFsync(img, 4096, written)
  const pid = (JSON.parse(fs.readFileSync(path.join(store, 'daemon.json'), 'utf8')) as { pid: number }).pid

  const u = await logdisk('unmount', mnt)
  t.not(u.code, 0, 'unmount exits non-zero')
  t.notMatch(u.stdout, /unmounted/, 'and does not say it unmounted cleanly')
  t.match(u.stderr, /^logdisk: the daemon \(pid \d+\) detached .* but exited without closing the store .* cleanly \(it logged: closing the store failed.*close-fails.*\); the store is as after a crash/, `one line naming the failure: ${u.stderr.trim()}`)
  t.equal(u.stderr.trim().split('\n').length, 1, 'one line')
  t.notOk(isMounted(mnt), 'the mount is gone (as the message says)')
  t.notOk(isAlive(pid), 'the daemon is gone')

  // What was written and flushed is there: the next open recovers it from the log.
  const again = await logdisk('mount', store, mnt)
  t.equal(again.code, 0, `mounts again: ${again.stderr}`)
  t.ok(readAt(img, 4096, MiB).equals(written), 'the flushed write reads back')
  const u2 = await logdisk('unmount', mnt)
  t.equal(u2.code, 0, `a mount without the fault unmounts: ${u2.stderr}`)
  t.match(u2.stdout, /^unmounted /)
})

t.test('the index cannot be written (its filesystem full): unmount is refused, the mount still serves; with room it unmounts cleanly', { skip, timeout: 180_000 }, async t => {
  const dir = tmpDir('unmount-index-full')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const index = path.join(store, 'index')
  await must(process.execPath, CLI, 'create', store, '--size', '16M', '--segment-size', '2M')
  // The index on a filesystem of its own, which fills up while the log's has room.
  const saved = path.join(dir, 'index-saved')
  fs.cpSync(index, saved, { recursive: true })
  await must('mount', '-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', index)
  fs.cpSync(saved, index, { recursive: true })
  const m = await run(process.execPath, [CLI, 'mount', store, mnt])
  t.equal(m.code, 0, `mounted: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const first = data('first', 2 * MiB)
  withFsync(img, 0, first)
  t.equal((await logdisk('sync', store)).code, 0, 'synced: the index has the first write')

  const filler = path.join(index, 'filler')
  await run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${filler}2`, 'bs=4k', 'status=none'])
  t.equal(fs.statfsSync(index).bavail, 0, 'the index\'s filesystem is full')
  const second = data('second', 4 * MiB)
  withFsync(img, 4 * MiB, second) // the log's filesystem has room: the write goes in

  const u = await logdisk('unmount', mnt)
  t.not(u.code, 0, 'unmount exits non-zero')
  t.match(u.stderr, /^logdisk: cannot unmount .*: the store's index could not be written, so the store cannot be closed cleanly \(.*\); nothing was stopped, the mount still serves/, `one line saying why: ${u.stderr.trim()}`)
  t.equal(u.stderr.trim().split('\n').length, 1, 'one line')
  t.ok(isMounted(mnt), 'still mounted')
  t.ok(readAt(img, 4 * MiB, 4 * MiB).equals(second), 'and serving: the write reads back')
  const st = await logdisk('status', store)
  t.equal(st.code, 0, `the daemon answers: ${st.stderr}`)

  fs.rmSync(filler)
  fs.rmSync(`${filler}2`)
  const u2 = await logdisk('unmount', mnt)
  t.equal(u2.code, 0, `with room the unmount goes through: ${u2.stderr}`)
  t.match(u2.stdout, /^unmounted /)
  t.notOk(isMounted(mnt), 'no mount left')
  t.notOk(fs.existsSync(path.join(store, 'daemon.json')), 'daemon.json is gone (a clean close)')
  const status = JSON.parse((await logdisk('status', store, '--json')).stdout) as { recovery: { replayedEntries: number } }
  t.equal(status.recovery.replayedEntries, 0, 'closed cleanly: nothing to replay')
  const again = await logdisk('mount', store, mnt)
  t.equal(again.code, 0, `mounts again: ${again.stderr}`)
  t.ok(readAt(img, 0, 2 * MiB).equals(first) && readAt(img, 4 * MiB, 4 * MiB).equals(second), 'both writes read back')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
