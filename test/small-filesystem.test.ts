// A store on a small filesystem (40 MiB) filled it up to the pool's headroom, a tenth of it
// (4 MiB); the index's checkpoint at unmount then took some of that, and the next mount was
// refused: a command that writes needs 4 MiB free (a hostile test, helper-56). The headroom is
// now never under 8 MiB (or half a small filesystem).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const skip = canMount()

t.test('a store that filled a small filesystem mounts again', { skip, timeout: 180_000 }, async t => {
  const dir = tmpDir('small-filesystem')
  t.teardown(() => cleanup(dir, t))
  const small = path.join(dir, 'small')
  const spare = path.join(dir, 'spare')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(small)
  await must('mount', '-t', 'tmpfs', '-o', 'size=40M', 'tmpfs', small)
  const store = path.join(small, 's')
  t.equal((await logdisk('create', store, '--size', '128M', '--segment-size', '4M')).code, 0)
  t.equal((await logdisk('pool', 'add', store, spare, '--spare', '--capacity', '64M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const data = crypto.randomBytes(60 * MiB)
  const fd = fs.openSync(path.join(mnt, 'current.img'), 'r+')
  try {
    for (let at = 0; at < data.length; at += 4 * MiB) fs.writeSync(fd, data, at, 4 * MiB, at)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const free = fs.statfsSync(small).bavail * fs.statfsSync(small).bsize
  t.ok(free >= 4 * MiB, `the store's filesystem keeps what a command that writes needs: ${(free / MiB).toFixed(1)} MiB free`)
  const again = await logdisk('mount', store, mnt)
  t.equal(again.code, 0, `it mounts again: ${again.stderr}`)
  if (again.code === 0) {
    const back = Buffer.alloc(data.length)
    const rfd = fs.openSync(path.join(mnt, 'current.img'), 'r')
    try { fs.readSync(rfd, back, 0, back.length, 0) } finally { fs.closeSync(rfd) }
    t.ok(back.equals(data), 'and reads what was written')
    t.equal((await logdisk('unmount', mnt)).code, 0)
  }
})
