// Scattered discards in a pool with a bounded size (a 32 MiB tmpfs as its one volume, 24 MiB
// of it for segments): before
// trims moved with compaction (store format 5), every segment holding a trim that stayed its
// block's newest version was kept for good: this loop of FALLOCATE punch-holes, rewrites
// elsewhere and compactions left 21 segment files in it, and with a volume of declared
// capacity (a hostile test's repro) writes got ENOSPC at about the eleventh round.
// Real parts: the /dev/fuse transport, fallocate(1) on current.img, `logdisk compact`.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const KiB = 1024
const skip = canMount()

t.test('punch-holes scattered over written data, rewrites elsewhere and compactions never fill a bounded pool', { skip, timeout: 240_000 }, async t => {
  const dir = tmpDir('trim-pool')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const pool = path.join(dir, 'pool')
  fs.mkdirSync(pool)
  await must('mount', '-t', 'tmpfs', '-o', 'size=32M', 'tmpfs', pool)
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '64M', '--segment-size', '2M', '--pool', pool)
  t.equal((await logdisk('policy', 'set', store, 'history.keep=0', 'compact.every=0')).code, 0, 'no history window, no timed compaction')
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mount: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const model = Buffer.alloc(24 * MiB)
  const fd = fs.openSync(img, 'r+')
  try {
    const first = crypto.randomBytes(8 * MiB)
    fs.writeSync(fd, first, 0, first.length, 0)
    first.copy(model)
    fs.fsyncSync(fd)
    const rounds = 30
    for (let round = 0; round < rounds; round++) {
      // One 4 KiB punch every 128 KiB of the first 8 MiB, a different block of each stripe every round.
      for (let at = round * 4 * KiB; at < 8 * MiB; at += 128 * KiB) {
        await must('fallocate', '--punch-hole', '--keep-size', '-o', String(at), '-l', String(4 * KiB), img)
        model.fill(0, at, at + 4 * KiB)
      }
      const at = 16 * MiB + (round % 8) * MiB
      const data = crypto.randomBytes(MiB)
      fs.writeSync(fd, data, 0, data.length, at) // throws ENOSPC when the pool is full
      data.copy(model, at)
      fs.fsyncSync(fd)
      if (round % 3 === 2) {
        const c = await logdisk('compact', store)
        t.equal(c.code, 0, `round ${round}: compact: ${c.stdout.trim()}${c.stderr.trim()}`)
      }
    }
    const back = Buffer.alloc(model.length)
    fs.readSync(fd, back, 0, back.length, 0)
    t.ok(back.equals(model), `after ${rounds} rounds the image reads as written, punched blocks as zeros`)
  } finally {
    fs.closeSync(fd)
  }
  // The volume keeps a store's segments in a directory named by the store's uuid.
  const segments = fs.readdirSync(pool, { recursive: true }).filter(f => String(f).endsWith('.log')).length
  t.ok(segments > 0, 'the pool volume holds the segments')
  t.ok(segments <= 9, `the pool holds ${segments} segment files of 2 MiB (its room: 12)`)
  const v = await logdisk('verify', store)
  t.equal(v.code, 0, `verify: ${v.stdout}${v.stderr}`)
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
})
