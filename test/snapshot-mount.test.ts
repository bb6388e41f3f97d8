// Snapshots through a real mount: ext4 trees in A.img and B.img, read-only images, freeze.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CLI, canMount, cleanup, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'
import { checksumTree, diffTrees } from './helpers/tree'

const skip = canMount()

function sha (file: string, length: number): string {
  const buf = Buffer.alloc(length)
  const fd = fs.openSync(file, 'r')
  fs.readSync(fd, buf, 0, length, 0)
  fs.closeSync(fd)
  return require('node:crypto').createHash('sha256').update(buf).digest('hex')
}

t.test('each snapshot image shows exactly its own tree, at the same time as current; e2fsck clean', { skip }, async t => {
  const dir = tmpDir('snapfs')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  const aDir = path.join(dir, 'a')
  const bDir = path.join(dir, 'b')
  for (const d of [fsDir, aDir, bDir]) fs.mkdirSync(d)
  await must(process.execPath, CLI, 'create', store, '--size', '512M')
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const img = path.join(mnt, 'current.img')
  await must('mkfs.ext4', '-q', '-F', img)
  await must('mount', '-o', 'loop', img, fsDir)
  await must('cp', '-a', '/usr/share/doc', path.join(fsDir, 'doc'))
  const treeA = checksumTree(fsDir)

  const snapA = await logdisk('snapshot', store, '--name', 'A', '--freeze', fsDir)
  t.equal(snapA.code, 0, snapA.stderr)
  t.match(snapA.stdout, /application-consistent/)
  // Change the tree: delete, modify and add files.
  const files = [...treeA.keys()].filter(f => !f.startsWith('lost+found')).sort()
  for (const f of files.slice(0, 50)) fs.rmSync(path.join(fsDir, f))
  for (const f of files.slice(50, 80)) fs.appendFileSync(path.join(fsDir, f), 'changed after A\n')
  fs.mkdirSync(path.join(fsDir, 'new'))
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(fsDir, 'new', `f${i}`), Buffer.alloc(10_000 + i, i))
  const treeB = checksumTree(fsDir)
  t.not(diffTrees(treeA, treeB).length, 0, 'the trees differ')
  t.equal((await logdisk('snapshot', store, '--name', 'B', '--freeze', fsDir)).code, 0)
  fs.writeFileSync(path.join(fsDir, 'only-in-current'), 'x')
  const treeCurrent = checksumTree(fsDir)

  t.same(fs.readdirSync(mnt).sort(), ['A.img', 'B.img', 'current.img', 'stats'], 'the images appear in the mount (beside the stats file)')
  t.equal(fs.statSync(path.join(mnt, 'A.img')).mode & 0o777, 0o444, 'snapshot images are read-only')
  await must('mount', '-o', 'loop,ro', path.join(mnt, 'A.img'), aDir)
  await must('mount', '-o', 'loop,ro', path.join(mnt, 'B.img'), bDir)
  t.same(diffTrees(treeA, checksumTree(aDir)), [], 'A.img shows the tree at A')
  t.same(diffTrees(treeB, checksumTree(bDir)), [], 'B.img shows the tree at B')
  t.same(diffTrees(treeCurrent, checksumTree(fsDir)), [], 'current shows the newest tree, all three mounted at once')

  const busy = await logdisk('delete', store, 'A')
  t.not(busy.code, 0)
  t.match(busy.stderr, /A\.img is open \(held by \/dev\/loop\d+ \(mounted at [^)]+\)\); release it with: umount /, 'deleting a loop-mounted snapshot is refused, naming what holds it and how to let go')

  await must('umount', aDir)
  await must('umount', bDir)
  await must('umount', fsDir)
  for (const name of ['A.img', 'B.img', 'current.img']) {
    const fsck = await run('e2fsck', ['-fn', path.join(mnt, name)])
    t.equal(fsck.code, 0, `e2fsck -fn ${name} is clean`)
  }
  await new Promise(resolve => setTimeout(resolve, 300)) // loop devices release the images
  t.equal((await logdisk('delete', store, 'A')).code, 0, 'delete works once A.img is closed')
  await new Promise(resolve => setTimeout(resolve, 1100)) // the kernel's 1 s entry cache
  t.same(fs.readdirSync(mnt).sort(), ['B.img', 'current.img', 'stats'], 'A.img is gone from the mount')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.equal((await logdisk('verify', store)).code, 0)
})

t.test('writes and truncates of a snapshot image fail with EROFS and change nothing', { skip }, async t => {
  const dir = tmpDir('erofs')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const fd = fs.openSync(path.join(mnt, 'current.img'), 'r+')
  fs.writeSync(fd, Buffer.alloc(1 << 20, 0x5a), 0, 1 << 20, 0)
  fs.closeSync(fd)
  t.equal((await logdisk('snapshot', store, '--name', 's')).code, 0)
  const snap = path.join(mnt, 's.img')
  const before = sha(snap, 2 << 20)
  t.throws(() => fs.openSync(snap, 'r+'), { code: 'EROFS' }, 'open for writing fails with EROFS')
  t.throws(() => fs.truncateSync(snap, 0), { code: 'EROFS' }, 'truncate fails with EROFS')
  const w = await run('dd', ['if=/dev/zero', `of=${snap}`, 'bs=4k', 'count=1', 'conv=notrunc'])
  t.not(w.code, 0)
  t.match(w.stderr, /Read-only file system/, 'dd reports a read-only file system')
  t.equal(sha(snap, 2 << 20), before, 'the snapshot image is unchanged')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('--freeze thaws the filesystem even when the marker write fails', { skip }, async t => {
  const dir = tmpDir('freeze')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  await must(process.execPath, CLI, 'create', store, '--size', '64M')
  const mounted = await run(process.execPath, [CLI, 'mount', store, mnt], { env: { LOGDISK_FAULTS: 'marker' } })
  t.equal(mounted.code, 0, mounted.stderr)
  await must('mkfs.ext4', '-q', '-F', path.join(mnt, 'current.img'))
  await must('mount', '-o', 'loop', path.join(mnt, 'current.img'), fsDir)
  const wrong = await logdisk('sync', store, '--freeze', '/')
  t.not(wrong.code, 0, 'freezing a filesystem that is not on this store is refused')
  t.match(wrong.stderr, /^logdisk: \/ is not on .*current\.img/, 'with a line saying why')
  for (const args of [['sync', store, '--note', 'x', '--freeze', fsDir], ['snapshot', store, '--name', 'x', '--freeze', fsDir]]) {
    const r = await logdisk(...args)
    t.not(r.code, 0, `${args[0]} fails`)
    t.match(r.stderr, /^logdisk: injected fault/, `${args[0]}: the marker failure is reported in one line`)
    // A frozen filesystem would block this write until thawed; give it 10 s.
    const touch = await run('bash', ['-c', `echo data > ${fsDir}/after-${args[0]} && sync -f ${fsDir}/after-${args[0]}`], { timeoutMs: 10_000 })
    t.equal(touch.code, 0, `${args[0]}: the filesystem was thawed (writes go through)`)
    const thaw = await run('fsfreeze', ['-u', fsDir])
    t.not(thaw.code, 0, `${args[0]}: nothing left frozen (fsfreeze -u has nothing to thaw)`)
  }
  const snaps = await logdisk('snapshots', store, '--json')
  t.same(JSON.parse(snaps.stdout), [], 'no snapshot was recorded')
  await must('umount', fsDir)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.notOk(isMounted(mnt))
})

// A Ctrl-C while fsfreeze -f still flushed a dirty filesystem killed the command with no
// handler; the freeze went through and every writer hung until fsfreeze -u by hand, and the
// next --freeze said only "Device or resource busy" (helper-73).
t.test('--freeze interrupted while it freezes leaves the filesystem thawed; a frozen one is named', { skip, timeout: 240_000 }, async t => {
  const dir = tmpDir('freeze-int')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  await must(process.execPath, CLI, 'create', store, '--size', '512M', '--segment-size', '8M')
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  await must('mkfs.ext4', '-q', '-F', path.join(mnt, 'current.img'))
  await must('mount', '-o', 'loop', path.join(mnt, 'current.img'), fsDir)
  t.teardown(async () => { await run('fsfreeze', ['-u', fsDir]); await run('umount', [fsDir]) })
  for (const [i, delayMs] of [350, 450, 500, 550, 650].entries()) {
    // Dirty, unsynced data: fsfreeze -f then takes a while to flush it.
    await must('dd', 'if=/dev/urandom', `of=${path.join(fsDir, `dirty-${i}`)}`, 'bs=1M', 'count=150', 'status=none')
    const child = spawn(process.execPath, [CLI, 'snapshot', store, '--name', `x${i}`, '--freeze', fsDir], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
    await new Promise(resolve => setTimeout(resolve, delayMs))
    child.kill('SIGINT')
    const code = await exited
    // A frozen filesystem would block this write until thawed; give it 20 s.
    const touch = await run('bash', ['-c', `echo data > ${fsDir}/after-${i} && sync -f ${fsDir}/after-${i}`], { timeoutMs: 20_000 })
    t.equal(touch.code, 0, `SIGINT after ${delayMs} ms (exit ${code}; ${stderr.trim() || 'nothing said'}): the filesystem is thawed, writes go through`)
    // (Exit null: the signal came before node had set anything up, and nothing was frozen yet.)
    if (code === 130) t.match(stderr, /^logdisk: interrupted \(SIGINT\); \S+ is thawed; (nothing was cut|the cut may have been made: see logdisk snapshots \S+)\n$/, 'and the command says so in one line')
    fs.rmSync(path.join(fsDir, `dirty-${i}`))
  }
  // Frozen by someone else (or a --freeze killed outright): named, with the way out.
  await must('fsfreeze', '-f', fsDir)
  const busy = await logdisk('snapshot', store, '--name', 'y', '--freeze', fsDir)
  await must('fsfreeze', '-u', fsDir)
  t.equal(busy.code, 1)
  t.match(busy.stderr, new RegExp(`^logdisk: ${fsDir} is frozen already .*fsfreeze -u ${fsDir}; nothing was done\\n$`), 'a frozen filesystem is named, with the way out')
  await must('umount', fsDir)
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
