// export: a quick recovery volume of a snapshot, made while the store is mounted and written.
import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store/store'
import { CLI, canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'
import { checksumTree, diffTrees } from './helpers/tree'

const skip = canMount()

function sha (file: string, length?: number): string {
  const h = crypto.createHash('sha256')
  const fd = fs.openSync(file, 'r')
  const buf = Buffer.alloc(1 << 20)
  let pos = 0
  while (length === undefined || pos < length) {
    const n = fs.readSync(fd, buf, 0, length === undefined ? buf.length : Math.min(buf.length, length - pos), pos)
    if (n === 0) break
    h.update(buf.subarray(0, n))
    pos += n
  }
  fs.closeSync(fd)
  return h.digest('hex')
}

async function seqOf (store: string): Promise<number> {
  return JSON.parse(await must(process.execPath, CLI, 'status', store, '--json')).index.seq
}

t.test('export of an ext4 snapshot while fio writes through the mount: same bytes, e2fsck clean, to a file and a block device', { skip }, async t => {
  const dir = tmpDir('export')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  const qrvDir = path.join(dir, 'qrv')
  fs.mkdirSync(fsDir)
  fs.mkdirSync(qrvDir)
  const SIZE = 256 << 20
  await must(process.execPath, CLI, 'create', store, '--size', String(SIZE))
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  const img = path.join(mnt, 'current.img')
  await must('mkfs.ext4', '-q', '-F', img)
  await must('mount', '-o', 'loop', img, fsDir)
  fs.mkdirSync(path.join(fsDir, 'data'))
  for (let i = 0; i < 24; i++) fs.writeFileSync(path.join(fsDir, 'data', `f${i}`), crypto.randomBytes(100_000 * (i + 1)))
  await must('cp', '-a', '/usr/share/doc/bash', path.join(fsDir, 'bash-doc'))
  const treeA = checksumTree(fsDir)
  const snap = await logdisk('snapshot', store, '--name', 'A', '--freeze', fsDir)
  t.equal(snap.code, 0, snap.stderr)

  // fio rewrites a file in the mounted filesystem (ext4 -> loop -> current.img) during the export.
  const fio = spawn('fio', ['--name=w', `--filename=${path.join(fsDir, 'fio.dat')}`, '--size=48M', '--rw=randwrite', '--bs=64k',
    '--direct=1', '--ioengine=psync', '--time_based', '--runtime=120', '--fsync=16'], { stdio: 'ignore' })
  t.teardown(() => { if (fio.exitCode === null) fio.kill('SIGKILL') })
  await new Promise(resolve => setTimeout(resolve, 2000))
  const seqBefore = await seqOf(store)
  const out = path.join(qrvDir, 'A.img')
  const exported = await logdisk('export', store, 'A', '--out', out, '--json')
  t.equal(exported.code, 0, exported.stderr)
  const seqAfter = await seqOf(store)
  t.equal(fio.exitCode, null, 'fio was still writing when the export finished')
  t.ok(seqAfter > seqBefore + 10, `the store was written during the export (seq ${seqBefore} -> ${seqAfter})`)
  const r = JSON.parse(exported.stdout)
  t.same([r.snapshot, r.device, r.sizeBytes, r.deleted], ['A', false, SIZE, false])

  t.equal(fs.statSync(out).size, SIZE, 'the image has the volume\'s size')
  t.ok(fs.statSync(out).blocks * 512 < SIZE / 2, 'and is sparse')
  t.equal(sha(out), sha(path.join(mnt, 'A.img')), 'the exported image equals A.img byte for byte')

  // A block device target: every block is written, zeros included, in place.
  const backing = path.join(dir, 'backing.raw')
  fs.writeFileSync(backing, '')
  fs.truncateSync(backing, SIZE + (1 << 20))
  const fill = fs.openSync(backing, 'r+')
  fs.writeSync(fill, Buffer.alloc(1 << 20, 0xee), 0, 1 << 20, 200 << 20) // stale data the export must zero
  fs.closeSync(fill)
  const dev = (await must('losetup', '-f', '--show', backing)).trim()
  const toDev = await logdisk('export', store, 'A', '--out', dev)
  t.equal(toDev.code, 0, toDev.stderr)
  t.match(toDev.stdout, new RegExp(`to block device ${dev}`))
  t.equal(sha(dev, SIZE), sha(out), 'the device holds the same image (stale data overwritten by zeros)')
  const small = path.join(dir, 'small.raw')
  fs.writeFileSync(small, '')
  fs.truncateSync(small, 1 << 20)
  const smallDev = (await must('losetup', '-f', '--show', small)).trim()
  const tooSmall = await logdisk('export', store, 'A', '--out', smallDev)
  t.not(tooSmall.code, 0)
  t.match(tooSmall.stderr, /^logdisk: .* holds 1\.0 MiB \(1048576 bytes\); the image needs 256\.0 MiB \(268435456 bytes\)\n$/, 'a device too small is refused in one line')
  await must('losetup', '-d', smallDev)
  await must('losetup', '-d', dev)

  fio.kill('SIGTERM')
  await new Promise(resolve => fio.once('exit', resolve))
  await must('umount', fsDir)

  const fsck = await run('e2fsck', ['-fn', out])
  t.equal(fsck.code, 0, `e2fsck -fn on the exported image is clean: ${fsck.stdout.split('\n').slice(-3).join(' ')}`)
  const qrvMnt = path.join(dir, 'qrv-mnt')
  fs.mkdirSync(qrvMnt)
  await must('mount', '-o', 'loop,ro', out, qrvMnt)
  t.same(diffTrees(treeA, checksumTree(qrvMnt)), [], 'the exported image loop-mounts and holds the tree at A')
  await must('umount', qrvMnt)

  const again = await logdisk('export', store, 'A', '--out', out)
  t.not(again.code, 0)
  t.match(again.stderr, /^logdisk: .*A\.img exists; give --force to overwrite it\n$/, 'an existing file is not overwritten without --force')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('--delete-after deletes the snapshot only after a complete copy; a failed copy keeps it', async t => {
  const dir = tmpDir('exportdel')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  const SIZE = 32 << 20
  await Store.create(store, { sizeBytes: SIZE })
  const s = (await openStore(store)).store
  for (let i = 0; i < 64; i++) await s.write(i * 400_000, crypto.randomBytes(65536))
  await s.snapshot({ name: 'A' })
  await s.write(0, Buffer.alloc(1 << 20, 1)) // after A: must not show in the export
  const h = crypto.createHash('sha256')
  for (let off = 0; off < SIZE; off += 1 << 20) h.update(await s.readSnapshot('A', off, 1 << 20))
  const expected = h.digest('hex')
  await s.close()

  const out = path.join(dir, 'A.img')
  const failed = await run(process.execPath, [CLI, 'export', store, 'A', '--out', out, '--delete-after'], { env: { LOGDISK_FAULTS: 'export-copy' } })
  t.not(failed.code, 0, 'the copy failed')
  t.match(failed.stderr, /^logdisk: injected fault: the copy failed midway[^\n]*\n$/, 'one line says so')
  t.notOk(fs.existsSync(out), 'no image')
  t.notOk(fs.existsSync(`${out}.partial`), 'no partial file left')
  const snaps = JSON.parse(await must(process.execPath, CLI, 'snapshots', store, '--json')) as Array<{ name: string }>
  t.same(snaps.map(x => x.name), ['A'], 'the snapshot is kept')

  const ok = await logdisk('export', store, 'A', '--out', out, '--delete-after')
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /exported snapshot A to .*; deleted snapshot A/)
  t.equal(sha(out), expected, 'the image is A byte for byte')
  const after = JSON.parse(await must(process.execPath, CLI, 'snapshots', store, '--json')) as Array<{ name: string }>
  t.same(after, [], 'and A is deleted')
  const missing = await logdisk('export', store, 'A', '--out', path.join(dir, 'B.img'))
  t.not(missing.code, 0)
  t.match(missing.stderr, /^logdisk: no snapshot named "A"[^\n]*\n$/)
})
