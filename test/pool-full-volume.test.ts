// The filesystem under the current segment's pool volume fills up (something else wrote to it)
// while another volume has room: the writes go on in a new segment on the other volume. They
// got ENOSPC before (the current segment was never sealed and rolled elsewhere), until the
// full volume got room back. Real parts: a 12 MiB tmpfs as the first volume, the /dev/fuse
// transport, writes and fsync on current.img.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const skip = canMount()

t.test('a full filesystem under the current segment: writes go on in a segment on another volume', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('pool-full-volume')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const small = path.join(dir, 'small')
  const big = path.join(dir, 'big')
  fs.mkdirSync(small)
  fs.mkdirSync(big)
  await must('mount', '-t', 'tmpfs', '-o', 'size=12M', 'tmpfs', small)
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '64M', '--segment-size', '2M', '--pool', small, '--pool', big)
  t.equal((await logdisk('policy', 'set', store, 'compact.every=0')).code, 0)
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mount: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const fd = fs.openSync(img, 'r+')
  const model = Buffer.alloc(16 * MiB)
  try {
    const first = crypto.randomBytes(MiB / 2)
    fs.writeSync(fd, first, 0, first.length, 0)
    first.copy(model)
    fs.fsyncSync(fd)
    // Something else fills the small volume's filesystem: the current segment (on it, the
    // first volume in pool order) cannot grow any more.
    const filler = path.join(small, 'filler')
    const chunk = Buffer.alloc(256 * 1024, 7)
    const ffd = fs.openSync(filler, 'w')
    try {
      for (;;) fs.writeSync(ffd, chunk)
    } catch (err) {
      t.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', 'the small volume\'s filesystem is full')
    } finally {
      fs.closeSync(ffd)
    }
    for (let i = 1; i < 16; i++) {
      const data = crypto.randomBytes(MiB)
      fs.writeSync(fd, data, 0, data.length, i * MiB) // ENOSPC (EIO) here before the fix
      data.copy(model, i * MiB)
    }
    fs.fsyncSync(fd)
    const back = Buffer.alloc(model.length)
    fs.readSync(fd, back, 0, back.length, 0)
    t.ok(back.equals(model), 'every write reads back')
  } finally {
    fs.closeSync(fd)
  }
  const list = await logdisk('pool', 'list', store, '--json')
  t.equal(list.code, 0, list.stderr)
  const volumes = JSON.parse(list.stdout).volumes as Array<{ dir: string, segments: number }>
  t.ok((volumes.find(v => v.dir === big)?.segments ?? 0) >= 4, `the other volume took the new segments: ${JSON.stringify(volumes.map(v => [v.dir, v.segments]))}`)
  fs.rmSync(path.join(small, 'filler'))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout}${v.stderr}`)
})
