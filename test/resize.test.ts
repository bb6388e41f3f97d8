// resize: grow a mounted volume online under ext4 on a direct-I/O loop device (losetup -c,
// resize2fs of the filesystem, e2fsck clean); shrinking is refused while anything was written past the new end,
// and works when nothing was.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

t.setTimeout(600_000)
const skip = canMount()
const MiB = 1024 * 1024

t.test('grow online: the image, the loop device (losetup -c) and ext4 (resize2fs) grow; e2fsck clean', { skip }, async t => {
  const dir = tmpDir('resize')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  t.equal((await logdisk('create', store, '--size', '64M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const dev = (await logdisk('attach', mnt)).stdout.trim()
  t.match(dev, /^\/dev\/loop\d+$/)
  await must('mkfs.ext4', '-q', '-F', dev)
  await must('mount', dev, fsDir)
  const data = Buffer.alloc(8 * MiB)
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i)
  fs.writeFileSync(path.join(fsDir, 'before'), data)
  await must('sync')

  t.equal(fs.statSync(path.join(mnt, 'current.img')).size, 64 * MiB, 'the size before, cached by the kernel for 1 s')
  const r = await logdisk('resize', store, '--size', '+64M')
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout.trim(), `resized ${store}: 64.0 MiB -> 128.0 MiB`)
  // At once, with nothing in between: the daemon drops the kernel's cached attributes and has
  // it ask for the size. losetup -c got the old size from the attribute cache for up to 1 s
  // after the last stat (the stat above), and CLI.md told users to wait a second.
  await must('losetup', '-c', dev)
  t.equal(Number((await must('blockdev', '--getsize64', dev)).trim()), 128 * MiB, 'losetup -c right after the resize: the loop device sees it')
  t.equal(fs.statSync(path.join(mnt, 'current.img')).size, 128 * MiB, 'current.img has the new size at once')
  t.equal(JSON.parse((await logdisk('status', store, '--json')).stdout).sizeBytes, 128 * MiB, 'status says so')
  // resize2fs of the mounted ext4 needs CAP_SYS_RESOURCE, which a container may lack: grow it
  // unmounted (the logdisk volume and the loop device stay online throughout).
  await must('umount', fsDir)
  t.equal((await run('e2fsck', ['-f', '-p', dev])).code, 0, 'e2fsck -f before resize2fs')
  const grow = await run('resize2fs', [dev])
  t.equal(grow.code, 0, `resize2fs: ${grow.stderr}`)
  await must('mount', dev, fsDir)
  const df = (await must('df', '-B1', '--output=size', fsDir)).trim().split('\n').pop()!
  t.ok(Number(df) > 100 * MiB, `the filesystem grew to ${df} bytes`)
  // Fill past the old end.
  fs.writeFileSync(path.join(fsDir, 'after'), Buffer.alloc(80 * MiB, 0x5a))
  await must('sync')
  t.ok(fs.readFileSync(path.join(fsDir, 'before')).equals(data), 'what was there before is intact')

  // A shrink under an attached loop device left the device at the old size, its writes past
  // the new end failing with EIO (a hostile test, helper-56): refused while an image is open.
  const shrink = await logdisk('resize', store, '--size', '64M')
  t.equal(shrink.code, 1, 'shrinking under an attached loop device is refused')
  t.match(shrink.stderr, new RegExp(`^logdisk: cannot shrink ${store} while its images are open: current\\.img \\(held by ${dev} \\(mounted at ${fsDir}\\)\\); .*nothing was changed\\n$`))
  t.equal(fs.statSync(path.join(mnt, 'current.img')).size, 128 * MiB, 'nothing changed')

  await must('umount', fsDir)
  const fsck = await run('e2fsck', ['-fn', dev])
  t.equal(fsck.code, 0, `e2fsck -fn clean: ${fsck.stdout.trim().split('\n').pop()}`)
  t.equal((await logdisk('detach', dev)).code, 0)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal((await logdisk('unmount', mnt)).code, 0)
  // Unmounted, the new size stays (store.json), and the data reads back through a fresh mount.
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  t.equal(fs.statSync(path.join(mnt, 'current.img')).size, 128 * MiB, 'the size survives a remount')
  const fsck2 = await run('e2fsck', ['-fn', path.join(mnt, 'current.img')])
  t.equal(fsck2.code, 0, 'e2fsck clean after remount')
  const written = await logdisk('resize', store, '--size', '64M')
  t.equal(written.code, 1, 'with nothing attached, shrinking below written data is refused')
  t.match(written.stderr, /^logdisk: cannot shrink .* to 64\.0 MiB \(67108864 bytes\): block \d+ .* past the new end was written/)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.equal((await logdisk('verify', store)).code, 0, 'verify clean')
})

t.test('shrink: refused while a snapshot or the history holds a block past the new end; works when nothing was written there', { skip }, async t => {
  const dir = tmpDir('shrink')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '64M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const img = path.join(mnt, 'current.img')
  const fd = fs.openSync(img, 'r+')
  fs.writeSync(fd, Buffer.alloc(MiB, 1), 0, MiB, 0)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  const ok = await logdisk('resize', store, '--size', '32M', '--json')
  t.equal(ok.code, 0, ok.stderr)
  t.same(JSON.parse(ok.stdout), { fromBytes: 64 * MiB, toBytes: 32 * MiB, dir: store })
  t.equal(fs.statSync(img).size, 32 * MiB, 'shrunk at once: nothing was written past 32M')
  // A shell that holds the image runs the command, which inherits the descriptor: the holders
  // named are the shell, not logdisk's own process (a hostile test, helper-57).
  const held = await run('bash', ['-c', `exec 3<"${img}"; "${process.execPath}" "${path.resolve('dist/src/cli/main.js')}" resize "${store}" --size 16M; exit $?`])
  t.equal(held.code, 1, 'a shrink while a shell holds the image is refused')
  t.match(held.stderr, /current\.img \(held by pid \d+ \(bash\)\);/, 'naming the shell')
  t.notMatch(held.stderr, /\(node\)/, 'and not the command itself')
  const fd2 = fs.openSync(img, 'r+')
  t.throws(() => fs.writeSync(fd2, Buffer.alloc(4096), 0, 4096, 32 * MiB), { code: 'EFBIG' }, 'writes past the new end fail')
  fs.closeSync(fd2)
  t.equal((await logdisk('unmount', mnt)).code, 0)

  // Grow, write past the old end, snapshot, trim it away from the current volume: the snapshot still holds it.
  t.equal((await logdisk('resize', store, '--size', '64M')).code, 0, 'grow unmounted')
  // A change the rounded sizes hide is printed in bytes (it read "64.0 MiB -> 64.0 MiB").
  t.equal((await logdisk('resize', store, '--size', '+4K')).stdout.trim(), `resized ${store}: ${64 * MiB} bytes -> ${64 * MiB + 4096} bytes`, 'a small change in exact bytes')
  t.equal((await logdisk('resize', store, '--size', '64M')).code, 0, 'and back')
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const fd3 = fs.openSync(img, 'r+')
  fs.writeSync(fd3, Buffer.alloc(4096, 2), 0, 4096, 48 * MiB)
  fs.fsyncSync(fd3)
  fs.closeSync(fd3)
  t.equal((await logdisk('snapshot', store, '--name', 's')).code, 0)
  await must('fallocate', '--punch-hole', '--keep-size', '-o', String(48 * MiB), '-l', '4096', img)
  const refused = await logdisk('resize', store, '--size', '32M')
  t.equal(refused.code, 1, 'a snapshot holds a block past the new end: refused')
  t.match(refused.stderr, /block 12288 .* past the new end was written/)
  const bad = await logdisk('resize', store, '--size', '1000')
  t.equal(bad.code, 1)
  t.match(bad.stderr, /must be a positive multiple of the block size/)
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
