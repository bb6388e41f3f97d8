// The filesystem under a mounted store fills up from outside (another program takes the
// last byte, headroom included) while the image is written: writes are refused, nothing
// acknowledged is lost, the daemon stays up, and once there is room again everything works.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, logdisk, run } from './helpers/cli'
import { tmpfsStore } from './helpers/tmpfs-store'

const skip = canMount()
const MiB = 1024 * 1024
const IMAGE = 16 * MiB

function pattern (seed: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  for (let i = 0; i < bytes; i += 32) crypto.createHash('sha256').update(`${seed} ${i}`).digest().copy(out, i)
  return out
}

/** Writes `data` over the image 1 MiB at a time and fsyncs; the first error, if any. */
function writeAll (img: string, data: Buffer): NodeJS.ErrnoException | undefined {
  let fd: number | undefined
  try {
    fd = fs.openSync(img, 'r+')
    for (let off = 0; off < data.length; off += MiB) fs.writeSync(fd, data, off, MiB, off)
    fs.fsyncSync(fd)
    return undefined
  } catch (err) {
    return err as NodeJS.ErrnoException
  } finally {
    if (fd !== undefined) try { fs.closeSync(fd) } catch { /* the error above is the one that counts */ }
  }
}

t.test('a full filesystem under a mounted store: refused writes, no lost data, the daemon stays, room again works', { skip, timeout: 240_000 }, async t => {
  const { disk, store, img } = await tmpfsStore(t, 'fs-full-mounted', { tmpfsMiB: 80, policy: ['history.keep=0', 'compact.at=0'] })
  const mnt = path.dirname(img)

  const first = pattern('first', IMAGE)
  t.equal(writeAll(img, first), undefined, 'a first pass goes in')
  // Another program takes every byte left, the pool's headroom included.
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'filler')}`, 'bs=1M', 'status=none'])
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, 'filler2')}`, 'bs=4k', 'status=none'])
  t.equal(fs.statfsSync(disk).bavail, 0, 'the filesystem is full')
  let refused: NodeJS.ErrnoException | undefined
  const tried = [first]
  for (let pass = 0; pass < 4 && refused === undefined; pass++) {
    tried.push(pattern(`full ${pass}`, IMAGE))
    refused = writeAll(img, tried[tried.length - 1])
  }
  t.ok(refused !== undefined && ['ENOSPC', 'EIO'].includes(refused.code ?? ''), `writes on the full filesystem are refused (${refused?.code})`)
  const status = await logdisk('status', store)
  t.equal(status.code, 0, `the daemon still answers: ${status.stderr}`)
  // Every MiB holds what one of the passes wrote there: a refused write leaves no garbage.
  const now = fs.readFileSync(img)
  const mixed = []
  for (let off = 0; off < IMAGE; off += MiB) {
    if (!tried.some(p => p.subarray(off, off + MiB).equals(now.subarray(off, off + MiB)))) mixed.push(off / MiB)
  }
  t.same(mixed, [], 'each MiB of the image is one a pass wrote')

  fs.rmSync(path.join(disk, 'filler'))
  fs.rmSync(path.join(disk, 'filler2'))
  const last = pattern('after', IMAGE)
  t.equal(writeAll(img, last), undefined, 'with room again, a whole pass goes in')
  t.ok(fs.readFileSync(img).equals(last), 'and reads back')
  const un = await logdisk('unmount', mnt)
  t.equal(un.code, 0, `unmounts cleanly ${un.stderr}`)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify is clean: ${verify.stdout}${verify.stderr}`)
  t.equal((await run(process.execPath, [CLI, 'mount', store, mnt])).code, 0, 'mounts again')
  t.ok(fs.readFileSync(img).equals(last), 'after a remount the last pass reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
