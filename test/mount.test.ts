// Real parts: FUSE, mkfs.ext4, loop devices, e2fsck. Runs as root with /dev/fuse (CI does).
// What every transport must do (I/O, errno, snapshots, discard, kill -9, signals) is in the
// conformance suite, test/helpers/image-suite.ts; this file covers the CLI around a mount.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'
import { checksumTree, diffTrees } from './helpers/tree'

const skip = canMount()

t.test('ext4 on current.img keeps a copied tree across unmount and remount; e2fsck clean', { skip }, async t => {
  const dir = tmpDir('ext4')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  t.equal((await logdisk('create', store, '--size', '1G')).code, 0)
  const mounted = await logdisk('mount', store, mnt)
  t.equal(mounted.code, 0, mounted.stderr)
  t.equal(fs.statSync(path.join(mnt, 'current.img')).size, 1024 ** 3, 'current.img has the volume size')

  await must('mkfs.ext4', '-q', '-F', path.join(mnt, 'current.img'))
  await must('mount', '-o', 'loop', path.join(mnt, 'current.img'), fsDir)
  const source = path.resolve('node_modules')
  await must('cp', '-a', source, path.join(fsDir, 'tree'))
  const expected = checksumTree(source)
  t.ok(expected.size > 1000, `copied a real tree of ${expected.size} files`)
  await must('sync')
  await must('umount', fsDir)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.notOk(isMounted(mnt), 'unmounted')

  t.equal((await logdisk('mount', store, mnt)).code, 0)
  await must('mount', '-o', 'loop,ro', path.join(mnt, 'current.img'), fsDir)
  t.same(diffTrees(expected, checksumTree(path.join(fsDir, 'tree'))), [], 'every file has its checksum after remount')
  await must('umount', fsDir)
  const fsck = await run('e2fsck', ['-fn', path.join(mnt, 'current.img')])
  t.equal(fsck.code, 0, `e2fsck -fn is clean: ${fsck.stdout.trim().split('\n').pop()}`)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify: ${verify.stdout.trim()}`)
})

t.test('bad input gets one clear line and changes nothing', { skip }, async t => {
  const dir = tmpDir('bad')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const size = 16 * 1024 * 1024
  await must(process.execPath, 'dist/src/cli/main.js', 'create', store, '--size', '16M')

  const missing = await logdisk('mount', path.join(dir, 'nope'), mnt)
  t.not(missing.code, 0)
  t.match(missing.stderr, /^logdisk: no store at .*nope/, 'a store path that does not exist')
  t.equal(missing.stderr.trim().split('\n').length, 1, 'one line')

  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const second = await logdisk('mount', store, path.join(dir, 'mnt2'))
  t.not(second.code, 0)
  t.match(second.stderr, /already mounted at/, 'a second mount is refused')

  const img = path.join(mnt, 'current.img')
  const fd = fs.openSync(img, 'r+')
  t.throws(() => fs.writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, size - 2048), { code: 'EFBIG' }, 'a write across the end fails with EFBIG')
  t.throws(() => fs.writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, size), /EFBIG|ENOSPC|EINVAL/, 'a write past the end fails')
  const tail = Buffer.alloc(4096, 1)
  fs.readSync(fd, tail, 0, 4096, size - 4096)
  t.ok(tail.equals(Buffer.alloc(4096)), 'the last block is unchanged (zeros)')
  t.throws(() => fs.ftruncateSync(fd, 1000), { code: 'EPERM' }, 'the image cannot be resized')
  fs.closeSync(fd)

  const loop = (await must('losetup', '-f', '--show', img)).trim()
  const busy = await logdisk('unmount', mnt)
  t.not(busy.code, 0)
  t.match(busy.stderr, /busy/, 'unmount is refused while a loop device holds the image')
  t.ok(isMounted(mnt), 'still mounted')
  await must('losetup', '-d', loop)
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal((await logdisk('unmount', mnt)).code, 0, 'unmount works once the loop device is gone')

  const notMounted = await logdisk('unmount', mnt)
  t.not(notMounted.code, 0)
  t.match(notMounted.stderr, /^logdisk: .* is not a logdisk mount: nothing to unmount\n$/)
})
