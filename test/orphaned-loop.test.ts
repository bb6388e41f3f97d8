// When a daemon dies, devfuse's watchdog detaches its mount, and a loop device attached over
// one of its images stays, its backing file named by its path inside the detached mount
// (/current.img). Nothing named it: `unmount` said only "not a logdisk mount: nothing to
// unmount", and `detach` refused it as "not a logdisk image" (a hostile test, helper-54).
import fs from 'node:fs'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import t from 'tap'
import { canMount, cleanup, daemonPid, isMounted, logdisk, tmpDir } from './helpers/cli'

const skip = canMount()

t.test('a loop device left over a dead daemon\'s image: unmount names it, detach frees it', { skip, timeout: 120_000 }, async t => {
  const dir = tmpDir('orphaned-loop')
  let device = ''
  t.teardown(async () => {
    if (device !== '') try { execFileSync('losetup', ['-d', device]) } catch { /* detached */ }
    await cleanup(dir, t)
  })
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  t.equal((await logdisk('create', store, '--size', '64M')).code, 0)
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const attach = await logdisk('attach', mnt)
  t.equal(attach.code, 0, attach.stderr)
  device = attach.stdout.trim()
  process.kill(daemonPid(store), 'SIGKILL')
  const deadline = Date.now() + 20_000
  while (isMounted(mnt) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 100))
  t.notOk(isMounted(mnt), 'the watchdog detached the dead daemon\'s mount')
  t.equal(fs.readFileSync(`/sys/block/${path.basename(device)}/loop/backing_file`, 'utf8').trim(), '/current.img', `${device} is left over the image`)

  const unmount = await logdisk('unmount', mnt)
  t.equal(unmount.code, 1, 'unmount: nothing to unmount')
  t.match(unmount.stderr, new RegExp(`^logdisk: ${mnt} is not a logdisk mount: nothing to unmount; ${device} is still attached to /current\\.img of that mount, which is gone .*logdisk detach ${device}`), 'and names the loop device left behind')
  const detach = await logdisk('detach', device)
  t.equal(detach.code, 0, `detach frees it: ${detach.stderr}`)
  t.throws(() => fs.readFileSync(`/sys/block/${path.basename(device)}/loop/backing_file`), 'the loop device is free')
  if (detach.code === 0) device = ''
  t.equal((await logdisk('mount', store, mnt)).code, 0, 'the store mounts again')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

// A plain loop device over a file of a tmpfs unmounted lazily has the same kind of backing
// path (/disk.img, no such file) but works, and is not logdisk's: detach freed it (a hostile
// test, helper-57).
t.test('a loop device over a lazily unmounted non-FUSE file is not taken for a dead daemon\'s', { skip, timeout: 60_000 }, async t => {
  const dir = tmpDir('orphaned-loop-other')
  const fsDir = path.join(dir, 't')
  fs.mkdirSync(fsDir)
  let device = ''
  t.teardown(async () => {
    if (device !== '') try { execFileSync('losetup', ['-d', device]) } catch { /* detached */ }
    try { execFileSync('umount', ['-l', fsDir]) } catch { /* not mounted */ }
    await cleanup(dir, t)
  })
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8M', 'tmpfs', fsDir])
  fs.writeFileSync(path.join(fsDir, 'disk.img'), Buffer.alloc(4 * 1024 * 1024))
  device = execFileSync('losetup', ['--find', '--show', path.join(fsDir, 'disk.img')], { encoding: 'utf8' }).trim()
  execFileSync('umount', ['-l', fsDir])
  t.equal(fs.readFileSync(`/sys/block/${path.basename(device)}/loop/backing_file`, 'utf8').trim(), '/disk.img', 'its backing path looks like a lost image')
  const unmount = await logdisk('unmount', path.join(dir, 'nowhere'))
  t.notMatch(unmount.stderr, new RegExp(device), 'unmount does not name it')
  const detach = await logdisk('detach', device)
  t.equal(detach.code, 1, 'detach refuses it')
  t.match(detach.stderr, /not to a logdisk image; detach it with losetup -d yourself/)
})
