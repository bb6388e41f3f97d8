// A pool volume that became read-only (its filesystem remounted read-only, as ext4 does after
// errors) holds the newest segment: the store still mounts for writing, reads what is there,
// and the log goes on in a new segment on another volume. Before, recovery's rewrite of the
// newest segment's header page failed and the mount with it ("its filesystem is read-only").
// Real parts: a tmpfs volume remounted read-only, the /dev/fuse transport.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'
import { readAt, writeAt } from './helpers/image-file'

const MiB = 1024 * 1024
const skip = canMount()

t.test('the newest segment on a volume that became read-only: the store mounts, reads, and writes on elsewhere', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-ro-volume')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const a = path.join(dir, 'a')
  const b = path.join(dir, 'b')
  fs.mkdirSync(a)
  fs.mkdirSync(b)
  await must('mount', '-t', 'tmpfs', '-o', 'size=32M', 'tmpfs', a)
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '64M', '--segment-size', '2M', '--pool', a, '--pool', b)
  const img = path.join(mnt, 'current.img')
  const model = Buffer.alloc(16 * MiB)
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  const first = crypto.randomBytes(3 * MiB)
  writeAt(img, 0, first)
  first.copy(model)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')

  await must('mount', '-o', 'remount,ro', a)
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mounts with the newest segment on a read-only volume: ${m.stderr}`)
  t.ok(readAt(img, 0, model.length).equals(model), 'what the read-only volume holds reads back')
  const more = crypto.randomBytes(5 * MiB)
  writeAt(img, 8 * MiB, more)
  more.copy(model, 8 * MiB)
  t.ok(readAt(img, 0, model.length).equals(model), 'new writes read back beside the old data')
  const list = JSON.parse((await logdisk('pool', 'list', store, '--json')).stdout).volumes as Array<{ dir: string, state: string, segments: number }>
  t.equal(list.find(v => v.dir === a)?.state, 'read-only', 'the volume shows as read-only')
  t.ok((list.find(v => v.dir === b)?.segments ?? 0) >= 2, `the new segments went to the other volume: ${JSON.stringify(list.map(v => [v.dir, v.state, v.segments]))}`)
  // A compaction that would free entries there fails, clearly; its header writes wait on
  // record, and the store still mounts (the open failed redoing them: a hostile test's D1).
  t.equal((await logdisk('policy', 'set', store, 'history.keep=0')).code, 0)
  writeAt(img, 0, more.subarray(0, 3 * MiB)) // the first segment's data is now dead
  more.copy(model, 0, 0, 3 * MiB)
  const c = await logdisk('compact', store)
  t.equal(c.code, 1, 'a compaction that must write free headers on the read-only volume fails')
  t.match(c.stderr, /read-only/, `and says why: ${c.stderr.trim()}`)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const again = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(again.code, 0, `mounts again with header writes pending on the read-only volume: ${again.stderr}`)
  t.ok(readAt(img, 0, model.length).equals(model), 'and reads as written')
  const waits = await logdisk('compact', store)
  t.match(waits.stderr, /compaction waits: .*read-only/, `a later compaction waits for the volume: ${waits.stderr.trim()}`)
  t.ok(waits.stderr.includes(`(${a}/`), 'and names it (not the store)')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify with the volume read-only: ${v.stdout}${v.stderr}`)

  // Writable again: everything still reads as written.
  await must('mount', '-o', 'remount,rw', a)
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount with the volume writable again')
  t.ok(readAt(img, 0, model.length).equals(model), 'every write reads back')
  const compacted = await logdisk('compact', store)
  t.equal(compacted.code, 0, `the pending header writes and the compaction go through: ${compacted.stdout.trim()}${compacted.stderr.trim()}`)
  t.ok(readAt(img, 0, model.length).equals(model), 'compacted: every write reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v2 = await logdisk('verify', store)
  t.equal(v2.code, 0, `verify: ${v2.stdout}${v2.stderr}`)
})

t.test('the only pool volume became read-only: the store still mounts and reads; writes fail', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-ro-only')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const a = path.join(dir, 'a')
  fs.mkdirSync(a)
  await must('mount', '-t', 'tmpfs', '-o', 'size=32M', 'tmpfs', a)
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '64M', '--segment-size', '2M', '--pool', a)
  const img = path.join(mnt, 'current.img')
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  const data = crypto.randomBytes(3 * MiB)
  writeAt(img, 0, data)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  await must('mount', '-o', 'remount,ro', a)
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mounts: ${m.stderr}`)
  t.ok(readAt(img, 0, data.length).equals(data), 'reads what the volume holds')
  t.throws(() => writeAt(img, 8 * MiB, Buffer.alloc(4096, 1)), /EROFS|ENOSPC|EIO/, 'a write fails')
  t.ok(readAt(img, 0, data.length).equals(data), 'and changed nothing')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
})

