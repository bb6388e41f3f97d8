// A pool volume whose directory is gone (deleted, its disk lost). `pool remove` of it failed,
// mounted or not, with "IO: pool volume ...: cannot take its lock: ENOENT" (releasing its marker),
// even when it held no segment: never any, or pool repair had made their copies elsewhere. The
// "missing" warning then stayed for good. And pool list, mount and pool remove printed "error: ...
// segments on it cannot be read until it is back" of a volume that held none (helper-75's D3).
// Now one the index names no copy on is removed; one holding segments is refused in one clear line;
// the error line only when it holds segments that cannot be read.
// Real parts: the CLI, the /dev/fuse transport for the writes.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'
import { readAt, writeAt } from './helpers/image-file'

const MiB = 1024 * 1024
const skip = canMount()

t.test('a pool volume whose directory is gone: removed when it holds nothing, refused while segments are only there', { skip, timeout: 180_000 }, async t => {
  const dir = tmpDir('pool-remove-gone')
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(n => path.join(dir, n))
  t.teardown(async () => {
    await logdisk('unmount', mnt)
    await cleanup(dir, t)
  })
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '16M', '--segment-size', '2M', '--pool', a, '--pool', b)
  t.equal((await logdisk('pool', 'add', store, b)).code, 0, 'b assigned')

  // Never held a segment.
  fs.rmSync(b, { recursive: true })
  const list = await logdisk('pool', 'list', store)
  t.notMatch(list.stderr, /error/, `pool list: no error line for a volume that held nothing: ${list.stderr.trim()}`)
  t.match(list.stdout + list.stderr, `pool volume ${b} is missing`, 'but a warning')
  const removed = await logdisk('pool', 'remove', store, b)
  t.equal(removed.code, 0, `removed (store not mounted): ${removed.stdout.trim()} ${removed.stderr.trim()}`)
  t.notMatch(removed.stderr, /error|lock/, 'no error line, no lock error')
  t.notMatch((await logdisk('pool', 'list', store)).stdout, ` ${b}`, 'gone from the pool')

  // Mounted: the same, through the daemon.
  t.equal((await logdisk('pool', 'add', store, c)).code, 0, 'c assigned')
  fs.rmSync(c, { recursive: true })
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, 'mount')
  t.notMatch(m.stderr, /error/, `mount: no error line: ${m.stderr.trim()}`)
  const removedMounted = await logdisk('pool', 'remove', store, c)
  t.equal(removedMounted.code, 0, `removed (mounted): ${removedMounted.stdout.trim()} ${removedMounted.stderr.trim()}`)

  // Holding the only copies of older segments (the newest on d: without it the store does not
  // open, and says so): refused in one clear line; the error line says they cannot be read.
  const img = path.join(mnt, 'current.img')
  const data = crypto.randomBytes(8 * MiB)
  writeAt(img, 0, data.subarray(0, 3 * MiB))
  t.equal((await logdisk('pool', 'add', store, d)).code, 0, 'd assigned')
  t.equal((await logdisk('pool', 'add', store, a, '--capacity', '6M')).code, 0, 'a full')
  writeAt(img, 3 * MiB, data.subarray(3 * MiB))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  fs.renameSync(a, a + '.away')
  const refused = await logdisk('pool', 'remove', store, a)
  t.equal(refused.code, 1, 'refused while its segments have no copy elsewhere')
  const lines = refused.stderr.trim().split('\n')
  t.match(lines[lines.length - 1], /cannot remove pool volume .*: its directory is gone and \d+ segment\(s\) .* have no copy elsewhere/, `says why: ${lines[lines.length - 1]}`)
  t.notMatch(refused.stderr, /lock/, 'not a lock error')
  t.match((await logdisk('pool', 'list', store)).stderr, /error: .*cannot be read/, 'pool list: the error line, for a volume that holds segments')

  // Back again: a drain moves them off, and everything reads.
  fs.renameSync(a + '.away', a)
  const drained = await logdisk('pool', 'remove', store, a)
  t.equal(drained.code, 0, `back, it drains: ${drained.stdout.trim()} ${drained.stderr.trim()}`)
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  t.ok(readAt(img, 0, data.length).equals(data), 'every write reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
})

t.test('a mirrored volume whose directory is gone, its copies repaired elsewhere: removed', { skip, timeout: 180_000 }, async t => {
  const dir = tmpDir('pool-remove-gone-mirror')
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const [a, b, c] = ['a', 'b', 'c'].map(n => path.join(dir, n))
  t.teardown(async () => {
    await logdisk('unmount', mnt)
    await cleanup(dir, t)
  })
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '16M', '--segment-size', '2M', '--pool', a, '--pool', b)
  t.equal((await logdisk('pool', 'add', store, b)).code, 0, 'b assigned')
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0, 'mirror=2')
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  const img = path.join(mnt, 'current.img')
  const data = crypto.randomBytes(3 * MiB)
  writeAt(img, 0, data)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  t.equal((await logdisk('pool', 'add', store, c)).code, 0, 'c assigned')
  fs.rmSync(b, { recursive: true })
  const repair = await logdisk('pool', 'repair', store)
  t.equal(repair.code, 0, `pool repair: ${repair.stdout.trim()} ${repair.stderr.trim()}`)
  const removed = await logdisk('pool', 'remove', store, b)
  t.equal(removed.code, 0, `removed after the repair: ${removed.stdout.trim()} ${removed.stderr.trim()}`)
  t.notMatch(removed.stderr, /error|lock/, 'no error line, no lock error')
  t.equal((await logdisk('mount', store, mnt, '--transport', 'devfuse')).code, 0, 'mount')
  t.ok(readAt(img, 0, data.length).equals(data), 'every write reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout.trim()}${v.stderr.trim()}`)
})
