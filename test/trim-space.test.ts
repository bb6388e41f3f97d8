// fstrim frees space in the store (issue 11, item 2): files deleted inside ext4 on the image,
// then fstrim and compact, give their space back to the host's disk, while a snapshot taken
// before the delete keeps every byte it sees. Real parts: the /dev/fuse transport, a
// direct-I/O loop device (logdisk attach), mkfs.ext4, fstrim, e2fsck. Root with /dev/fuse.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

const MiB = 1024 * 1024
const FILE_MIB = 96
const skip = canMount()
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

/** Bytes the store's files take on the host's disk (allocated, so punched holes count as freed). */
async function diskUse (store: string): Promise<number> {
  return Number((await must('du', '-s', '-B1', store)).split('\t')[0])
}

/** The device blocks (4 KiB) of a file inside the mounted ext4, from filefrag. */
async function extentsOf (file: string): Promise<Array<[number, number]>> {
  const out = await must('filefrag', '-e', '-b4096', file)
  return [...out.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)].map(m => [Number(m[1]), Number(m[2])])
}

function readExtents (file: string, extents: Array<[number, number]>): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const parts = extents.map(([a, b]) => {
      const buf = Buffer.alloc((b - a + 1) * 4096)
      fs.readSync(fd, buf, 0, buf.length, a * 4096)
      return buf
    })
    return Buffer.concat(parts)
  } finally {
    fs.closeSync(fd)
  }
}

t.test('rm, fstrim and compact give a deleted file\'s space back to the host; a snapshot before keeps its bytes', { skip, timeout: 280_000 }, async t => {
  const dir = tmpDir('trim-space')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  await must(process.execPath, path.resolve('dist/src/cli/main.js'), 'create', store, '--size', '512M', '--segment-size', '4M')
  t.equal((await logdisk('policy', 'set', store, 'history.keep=0', 'compact.every=0')).code, 0, 'no history window, no timed compaction')
  const m = await logdisk('mount', store, mnt, '--transport', 'devfuse')
  t.equal(m.code, 0, `mount: ${m.stderr}`)
  const img = path.join(mnt, 'current.img')
  const attached = await logdisk('attach', mnt)
  t.equal(attached.code, 0, `attach: ${attached.stderr}`)
  const dev = attached.stdout.trim()
  await must('mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev)
  await must('mount', dev, fsDir)

  // Two files of random data: `doomed` is deleted and trimmed before the snapshot, `kept` after it.
  const doomed = crypto.randomBytes(FILE_MIB * MiB)
  const kept = crypto.randomBytes(32 * MiB)
  fs.writeFileSync(path.join(fsDir, 'doomed'), doomed)
  fs.writeFileSync(path.join(fsDir, 'kept'), kept)
  await must('sync')
  const keptExtents = await extentsOf(path.join(fsDir, 'kept'))
  t.equal(sha(readExtents(dev, keptExtents)), sha(kept), 'kept\'s blocks on the device are its bytes')

  // Without the discard mount option, ext4 tells the device nothing when a file goes: until
  // fstrim, its blocks hold data, and a snapshot then would keep them.
  fs.rmSync(path.join(fsDir, 'doomed'))
  await must('sync')
  const trim1 = await run('fstrim', ['-v', fsDir])
  t.equal(trim1.code, 0, `fstrim: ${trim1.stdout.trim()}${trim1.stderr}`)
  const snap = await logdisk('snapshot', store, '--name', 'before', '--freeze', fsDir)
  t.equal(snap.code, 0, `snapshot: ${snap.stderr}`)
  fs.rmSync(path.join(fsDir, 'kept'))
  await must('sync')
  const trim = await run('fstrim', ['-v', fsDir])
  t.equal(trim.code, 0, `fstrim: ${trim.stdout.trim()}${trim.stderr}`)
  await must('umount', fsDir)
  const fsck = await run('e2fsck', ['-fn', dev])
  t.equal(fsck.code, 0, 'e2fsck -fn after fstrim is clean')
  t.equal((await logdisk('detach', dev)).code, 0, 'detach')

  const before = await diskUse(store)
  const compact = await logdisk('compact', store)
  t.equal(compact.code, 0, `compact: ${compact.stdout.trim()}${compact.stderr}`)
  const after = await diskUse(store)
  const freed = before - after
  t.comment(`store on disk: ${(before / MiB).toFixed(1)} MiB before compact, ${(after / MiB).toFixed(1)} MiB after (${(freed / MiB).toFixed(1)} MiB freed)`)
  t.ok(freed >= 0.9 * FILE_MIB * MiB && after < before - FILE_MIB * MiB + 48 * MiB, `compact after fstrim freed at least 90% of the ${FILE_MIB} MiB deleted before the snapshot (${(freed / MiB).toFixed(1)} MiB)`)
  t.ok(after >= 32 * MiB, `the snapshot still holds what it sees: the 32 MiB file deleted after it (${(after / MiB).toFixed(1)} MiB on disk)`)

  // The snapshot image keeps `kept`; the current image reads zeros there.
  const snapImg = path.join(mnt, 'before.img')
  t.equal(sha(readExtents(snapImg, keptExtents)), sha(kept), 'the snapshot taken before the trim still reads the deleted file\'s bytes')
  const zeros = readExtents(img, keptExtents)
  t.ok(zeros.equals(Buffer.alloc(zeros.length)), 'the current image reads zeros where the trimmed file was')
  const fsckSnap = await run('e2fsck', ['-fn', snapImg])
  t.equal(fsckSnap.code, 0, 'e2fsck -fn of the snapshot image is clean')

  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount')
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify: ${verify.stdout.trim().split('\n').pop()}`)
})
