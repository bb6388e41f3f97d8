// The conformance suite of the image folder: every test runs against one FUSE transport.
// test/image-devfuse.test.ts and test/image-fuse-native.test.ts run it, one line each (the
// pattern of abstract-level's shared suite). Real parts: FUSE, fio, mkfs.ext4, loop devices
// (buffered and direct I/O), fstrim, e2fsck. Root with /dev/fuse.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { DEFAULT_READERS } from '../../src/fuse/devfuse/mount'
import { pollingAvailable } from '../../src/fuse/devfuse/polled-channel'
import { Rng } from '../../src/testing/rng'
import { CLI, canMount, cleanup, daemonPid, isMounted, logdisk, mountForeground, must, run, tmpDir } from './cli'
import { checksumTree, diffTrees } from './tree'

export type Transport = 'devfuse' | 'fuse-native'

/** What differs between the transports, on purpose. */
const CAPS: Record<Transport, { discard: boolean, autoUnmount: boolean }> = {
  // protocol 7.38: FALLOCATE reaches the store; a watchdog unmounts when the daemon dies
  devfuse: { discard: true, autoUnmount: true },
  // libfuse 2.9 via fuse-native: no fallocate operation (EOPNOTSUPP); a dead daemon leaves a stale mount
  'fuse-native': { discard: false, autoUnmount: false }
}

const MiB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

/** Unmounts; a failure says why (the CLI's one-line error names the daemon's log). */
async function unmountOk (tt: Test, mnt: string): Promise<void> {
  const r = await logdisk('unmount', mnt)
  tt.equal(r.code, 0, r.code === 0 ? 'unmounted' : `unmount failed: ${(r.stderr || r.stdout).trim()}`)
}

function readAt (file: string, pos: number, len: number): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const buf = Buffer.alloc(len)
    const n = fs.readSync(fd, buf, 0, len, pos)
    return buf.subarray(0, n)
  } finally {
    fs.closeSync(fd)
  }
}

function writeAt (file: string, pos: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+')
  try {
    fs.writeSync(fd, data, 0, data.length, pos)
  } finally {
    fs.closeSync(fd)
  }
}

function randomBytes (rng: Rng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = rng.int(256)
  return b
}

export function imageSuite (transport: Transport): void {
  // Eight real-mount tests in one file: on a shared, loaded 2-core machine they take longer
  // than tap's default file timeout (300 s) together, though each stays within its own 240 s.
  t.setTimeout(1_200_000)
  const skip = canMount()
  const caps = CAPS[transport]
  const opts = { skip, timeout: 240_000 }

  /** A fresh store mounted with this transport; torn down with everything under its dir. */
  async function setup (tt: Test, name: string, size = '256M'): Promise<{ dir: string, store: string, mnt: string, img: string }> {
    const dir = tmpDir(`${name}-${transport}`)
    tt.teardown(() => cleanup(dir, t))
    const store = path.join(dir, 'store')
    const mnt = path.join(dir, 'mnt')
    await must(process.execPath, CLI, 'create', store, '--size', size)
    const m = await logdisk('mount', store, mnt, '--transport', transport)
    if (m.code !== 0) throw new Error(`mount failed: ${m.stderr}`)
    const status = JSON.parse((await logdisk('status', store, '--json')).stdout)
    tt.equal(status.transport, transport, `served by ${transport}`)
    if (transport === 'devfuse') {
      // Which way /dev/fuse is read (test/image-devfuse-threads.test.ts sets LOGDISK_FUSE_READERS).
      const init = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8').split('\n').filter(l => l.includes('FUSE session initialised')).map(l => JSON.parse(l)).pop()
      const threads = Number(process.env.LOGDISK_FUSE_READERS ?? (pollingAvailable() ? 0 : DEFAULT_READERS))
      tt.equal(init?.readers, threads > 0 ? threads : 'none: the event loop polls /dev/fuse', threads > 0 ? `read by ${threads} threads` : 'read by the event loop')
    }
    return { dir, store, mnt, img: path.join(mnt, 'current.img') }
  }

  t.test(`${transport}: reads and writes, aligned and not, big and small, many at once`, opts, async tt => {
    const { store, mnt, img } = await setup(tt, 'rw')
    const seed = Number(process.env.SEED ?? Date.now() % 1_000_000)
    tt.comment(`seed ${seed} (SEED=${seed} reproduces)`)
    const rng = new Rng(seed)
    tt.ok(readAt(img, 200 * MiB, 64 * 1024).equals(Buffer.alloc(64 * 1024)), 'never-written blocks read as zeros')

    const big = randomBytes(rng, 3 * MiB + 777)
    writeAt(img, MiB + 123, big)
    tt.equal(sha(readAt(img, MiB + 123, big.length)), sha(big), 'a 3 MiB write at an unaligned offset reads back')
    tt.ok(readAt(img, MiB, 123).equals(Buffer.alloc(123)), 'the bytes before it are untouched')
    tt.ok(readAt(img, MiB + 123 + big.length, 4096).equals(Buffer.alloc(4096)), 'the bytes after it are untouched')

    // Small unaligned writes against a model of the first 8 MiB.
    const model = Buffer.alloc(8 * MiB)
    model.set(big.subarray(0, 8 * MiB - (MiB + 123)), MiB + 123)
    const fd = fs.openSync(img, 'r+')
    for (let i = 0; i < 300; i++) {
      const len = rng.range(1, 20_000)
      const pos = rng.int(model.length - len)
      const data = randomBytes(rng, len)
      fs.writeSync(fd, data, 0, len, pos)
      data.copy(model, pos)
    }
    fs.closeSync(fd)
    tt.equal(sha(readAt(img, 0, model.length)), sha(model), '300 small unaligned writes match the model')

    // Many requests in flight: fio writes with checksums, then reads every block back.
    for (const [rw, bs, depth] of [['randwrite', '4k', 16], ['write', '1M', 8]] as const) {
      const r = await run('fio', ['--name=verify', `--filename=${img}`, '--offset=64M', '--size=32M', `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`,
        '--ioengine=libaio', '--direct=1', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--verify_state_save=0', '--randrepeat=0', '--output-format=terse'], { timeoutMs: 180_000 })
      tt.equal(r.code, 0, `fio ${rw} bs=${bs} iodepth=${depth} with crc32c verify: ${r.stderr.trim().split('\n').pop() ?? ''}`)
    }
    await unmountOk(tt, mnt)
    const verify = await logdisk('verify', store)
    tt.equal(verify.code, 0, `verify: ${verify.stdout.trim()}`)
  })

  t.test(`${transport}: I/O past the end fails with a clear errno; the image cannot be resized`, opts, async tt => {
    const { mnt, img } = await setup(tt, 'end', '16M')
    const size = 16 * MiB
    const fd = fs.openSync(img, 'r+')
    tt.throws(() => fs.writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, size - 2048), { code: 'EFBIG' }, 'a write across the end: EFBIG')
    tt.throws(() => fs.writeSync(fd, Buffer.alloc(4096, 0xaa), 0, 4096, size), { code: 'EFBIG' }, 'a write at the end: EFBIG')
    const tail = Buffer.alloc(8192, 1)
    tt.equal(fs.readSync(fd, tail, 0, 8192, size - 4096), 4096, 'a read across the end is short')
    tt.ok(tail.subarray(0, 4096).equals(Buffer.alloc(4096)), 'the last block is unchanged (zeros)')
    tt.equal(fs.readSync(fd, tail, 0, 4096, size), 0, 'a read at the end reads nothing')
    tt.equal(fs.readSync(fd, tail, 0, 4096, size + MiB), 0, 'a read past the end reads nothing')
    tt.throws(() => fs.ftruncateSync(fd, 1000), { code: 'EPERM' }, 'ftruncate to another size: EPERM')
    fs.ftruncateSync(fd, size) // to its own size: allowed, as for a block device
    fs.closeSync(fd)
    tt.equal(fs.statSync(img).size, size, 'still its size')
    await unmountOk(tt, mnt)
  })

  t.test(`${transport}: snapshot images keep their data and refuse every change with EROFS`, opts, async tt => {
    const { store, mnt, img } = await setup(tt, 'snap', '64M')
    const before = Buffer.alloc(2 * MiB, 0x5a)
    writeAt(img, 0, before)
    tt.equal((await logdisk('snapshot', store, '--name', 's')).code, 0)
    writeAt(img, 4096, Buffer.alloc(MiB, 0xa5))
    const snap = path.join(mnt, 's.img')
    tt.equal(sha(readAt(snap, 0, before.length)), sha(before), 's.img reads the data as it was at the snapshot')
    tt.ok(readAt(img, 4096, 16).equals(Buffer.alloc(16, 0xa5)), 'current.img reads the new data')
    tt.throws(() => fs.openSync(snap, 'r+'), { code: 'EROFS' }, 'open for writing: EROFS')
    tt.throws(() => fs.truncateSync(snap, 0), { code: 'EROFS' }, 'truncate: EROFS')
    tt.throws(() => fs.utimesSync(snap, new Date(), new Date()), { code: 'EROFS' }, 'utimes: EROFS')
    tt.throws(() => fs.accessSync(snap, fs.constants.W_OK), { code: 'EROFS' }, 'access(W_OK): EROFS')
    fs.accessSync(snap, fs.constants.R_OK)
    const dd = await run('dd', ['if=/dev/zero', `of=${snap}`, 'bs=4k', 'count=1', 'conv=notrunc'])
    tt.not(dd.code, 0)
    tt.match(dd.stderr, /Read-only file system/, 'dd: Read-only file system')
    const punch = await run('fallocate', ['--punch-hole', '--keep-size', '--offset', '0', '--length', '4096', snap])
    tt.not(punch.code, 0, 'fallocate on a snapshot image fails')
    tt.match(punch.stderr, /Read-only file system/, 'fallocate: Read-only file system')
    tt.equal(sha(readAt(snap, 0, before.length)), sha(before), 's.img is unchanged')
    await unmountOk(tt, mnt)
  })

  t.test(`${transport}: directory listing, stat, statfs and what the folder refuses`, opts, async tt => {
    const { store, mnt, img } = await setup(tt, 'dir', '64M')
    tt.same(fs.readdirSync(mnt), ['current.img', 'stats'], 'a new store shows current.img (and the stats file)')
    tt.equal((await logdisk('snapshot', store, '--name', 'a')).code, 0)
    tt.equal((await logdisk('snapshot', store, '--name', 'b')).code, 0)
    tt.same(fs.readdirSync(mnt).sort(), ['a.img', 'b.img', 'current.img', 'stats'], 'snapshot images appear at once')
    const st = fs.statSync(img)
    tt.equal(st.size, 64 * MiB, 'size: the volume size')
    tt.equal(st.mode, 0o100644, 'current.img: a regular file, rw-r--r--')
    tt.equal(st.blksize, 4096, 'st_blksize: the block size')
    tt.equal(st.blocks, 64 * MiB / 512, 'st_blocks: fully provisioned')
    tt.equal(st.uid, 0)
    tt.equal(fs.statSync(path.join(mnt, 'a.img')).mode, 0o100444, 'snapshot images: r--r--r--')
    tt.ok(fs.statSync(mnt).isDirectory(), 'the mountpoint is a directory')
    const df = (await must('stat', '-f', '-c', '%S %b %l', mnt)).trim().split(' ').map(Number)
    tt.same(df, [4096, 64 * MiB / 4096, 255], 'statfs: block size, blocks, name length')
    tt.throws(() => fs.statSync(path.join(mnt, 'nope.img')), { code: 'ENOENT' }, 'unknown name: ENOENT')
    tt.throws(() => fs.writeFileSync(path.join(mnt, 'new.img'), 'x'), { code: 'ENOSYS' }, 'creating a file: ENOSYS')
    tt.throws(() => fs.mkdirSync(path.join(mnt, 'd')), { code: 'ENOSYS' }, 'mkdir: ENOSYS')
    tt.throws(() => fs.unlinkSync(img), { code: 'ENOSYS' }, 'unlink: ENOSYS')
    tt.throws(() => fs.chmodSync(img, 0o600), { code: 'EPERM' }, 'chmod: EPERM')
    tt.throws(() => fs.chownSync(img, 1, 1), { code: 'EPERM' }, 'chown: EPERM')
    tt.equal((await logdisk('delete', store, 'a')).code, 0)
    tt.same(fs.readdirSync(mnt).sort(), ['b.img', 'current.img', 'stats'], 'a deleted snapshot leaves the listing')
    await new Promise(resolve => setTimeout(resolve, 1100)) // the kernel's 1 s entry cache
    tt.throws(() => fs.statSync(path.join(mnt, 'a.img')), { code: 'ENOENT' }, 'and its name')
    await unmountOk(tt, mnt)
  })

  t.test(`${transport}: fsynced writes survive kill -9 of the daemon; the next mount serves them`, opts, async tt => {
    const { store, mnt, img } = await setup(tt, 'kill9', '64M')
    const synced = Buffer.alloc(300_000)
    for (let i = 0; i < synced.length; i++) synced[i] = (i * 7 + 3) & 0xff
    const fd = fs.openSync(img, 'r+')
    fs.writeSync(fd, synced, 0, synced.length, 12_345) // unaligned on purpose
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    process.kill(daemonPid(store), 'SIGKILL')
    await new Promise(resolve => setTimeout(resolve, 500))
    if (caps.autoUnmount) {
      tt.notOk(isMounted(mnt), 'the watchdog unmounted the dead daemon\'s mount')
      tt.same(fs.readdirSync(mnt), [], 'the mountpoint is an empty directory again')
    } else {
      tt.throws(() => fs.readdirSync(mnt), { code: 'ENOTCONN' }, 'the mount is stale after kill -9')
    }
    const again = await logdisk('mount', store, mnt, '--transport', transport)
    tt.equal(again.code, 0, `mount again: ${again.stderr}`)
    tt.ok(readAt(img, 12_345, synced.length).equals(synced), 'every fsynced byte is back')
    tt.equal((await logdisk('verify', store)).code, 0, 'verify through the daemon is clean')
    await unmountOk(tt, mnt)
  })

  t.test(`${transport}: discard (FALLOCATE punch hole, zero range)`, opts, async tt => {
    const { store, mnt, img } = await setup(tt, 'discard', '64M')
    const rng = new Rng(11)
    const data = randomBytes(rng, 2 * MiB)
    writeAt(img, 0, data)
    tt.equal((await logdisk('snapshot', store, '--name', 'before')).code, 0)
    const falloc = (...args: string[]) => run('fallocate', [...args, img])
    const punch = await falloc('--punch-hole', '--keep-size', '--offset', '4196', '--length', String(100_000))
    const zero = await falloc('--zero-range', '--keep-size', '--offset', String(MiB), '--length', String(64 * 1024))
    const plain = await falloc('--offset', '0', '--length', '4096')
    tt.not(plain.code, 0, 'plain allocation is refused')
    tt.match(plain.stderr, /Operation not supported/, 'with EOPNOTSUPP')
    const collapse = await falloc('--collapse-range', '--offset', '0', '--length', '4096')
    tt.not(collapse.code, 0, 'collapse range is refused')
    const expected = Buffer.from(data)
    if (caps.discard) {
      tt.equal(punch.code, 0, `punch hole: ${punch.stderr}`)
      tt.equal(zero.code, 0, `zero range: ${zero.stderr}`)
      expected.fill(0, 4196, 4196 + 100_000)
      expected.fill(0, MiB, MiB + 64 * 1024)
      tt.equal((await falloc('--punch-hole', '--keep-size', '--offset', String(64 * MiB - 4096), '--length', String(MiB))).code, 0, 'a range running past the end is clipped')
    } else {
      tt.not(punch.code, 0, 'punch hole fails')
      tt.match(punch.stderr, /not supported|unsupported/, 'punch hole: not supported (libfuse 2.9 has no fallocate)')
      tt.not(zero.code, 0, 'zero range fails')
    }
    tt.equal(sha(readAt(img, 0, data.length)), sha(expected), caps.discard ? 'discarded ranges read as zeros, every other byte is unchanged' : 'nothing changed')
    tt.equal(sha(readAt(path.join(mnt, 'before.img'), 0, data.length)), sha(data), 'the snapshot before the discard keeps every byte')
    await unmountOk(tt, mnt)
    tt.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
  })

  t.test(`${transport}: mkfs.ext4 on a direct-I/O loop device (logdisk attach) and on mount -o loop; fstrim; e2fsck clean`, opts, async tt => {
    const { dir, store, mnt, img } = await setup(tt, 'ext4', '512M')
    const fsDir = path.join(dir, 'fs')
    fs.mkdirSync(fsDir)
    const attached = await logdisk('attach', mnt)
    tt.equal(attached.code, 0, `attach: ${attached.stderr}`)
    const dev = attached.stdout.trim()
    tt.match(dev, /^\/dev\/loop\d+$/, 'attach prints the loop device')
    tt.equal(fs.readFileSync(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8').trim(), '1', 'the loop device does direct I/O')
    const mkfs = await run('mkfs.ext4', ['-F', dev])
    tt.equal(mkfs.code, 0, 'mkfs.ext4 on the loop device')
    if (caps.discard) tt.match(mkfs.stdout, /Discarding device blocks:[^\n]*done/, 'mkfs discards the device')
    await must('mount', dev, fsDir)
    await must('cp', '-a', '/usr/share/doc', path.join(fsDir, 'doc'))
    const doomed = randomBytes(new Rng(5), 4 * MiB)
    fs.writeFileSync(path.join(fsDir, 'doomed'), doomed)
    await must('sync')
    // Where the doomed file's blocks are on the device, to check that fstrim zeroes them.
    const extents = [...(await must('filefrag', '-e', '-b4096', path.join(fsDir, 'doomed'))).matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)].map(m => [Number(m[1]), Number(m[2])])
    tt.ok(extents.length > 0, `the file has ${extents.length} extent(s)`)
    const tree = checksumTree(fsDir)
    fs.rmSync(path.join(fsDir, 'doomed'))
    await must('sync')
    const trim = await run('fstrim', ['-v', fsDir])
    if (caps.discard) {
      tt.equal(trim.code, 0, `fstrim: ${trim.stdout.trim()}${trim.stderr}`)
      tt.match(trim.stdout, /trimmed/)
      const fd = fs.openSync(dev, 'r')
      let zeros = true
      const block = Buffer.alloc(4096)
      for (const [a, b] of extents) for (let x = a; x <= b; x++) { fs.readSync(fd, block, 0, 4096, x * 4096); if (!block.equals(Buffer.alloc(4096))) zeros = false }
      fs.closeSync(fd)
      tt.ok(zeros, 'the deleted file\'s blocks read as zeros after fstrim')
    } else {
      tt.not(trim.code, 0, 'fstrim fails')
      tt.match(trim.stderr, /not supported/, 'fstrim: the discard operation is not supported')
    }
    tree.delete('doomed')
    await must('umount', fsDir)
    const fsck1 = await run('e2fsck', ['-fn', dev])
    tt.equal(fsck1.code, 0, 'e2fsck -fn on the loop device is clean')
    const busy = await logdisk('unmount', mnt)
    tt.not(busy.code, 0, 'unmount is refused while the loop device holds the image')
    tt.match(busy.stderr, /busy/)
    const detached = await logdisk('detach', dev)
    tt.equal(detached.code, 0, `detach: ${detached.stderr}`)

    await must('mount', '-o', 'loop', img, fsDir) // the buffered loop device
    tt.same(diffTrees(tree, checksumTree(fsDir)), [], 'mount -o loop shows the same tree')
    fs.writeFileSync(path.join(fsDir, 'more'), Buffer.alloc(3 * MiB, 7))
    await must('umount', fsDir)
    const fsck2 = await run('e2fsck', ['-fn', img])
    tt.equal(fsck2.code, 0, 'e2fsck -fn on the image is clean')
    await new Promise(resolve => setTimeout(resolve, 300)) // the loop device lets go of the image
    await unmountOk(tt, mnt)
    const verify = await logdisk('verify', store)
    tt.equal(verify.code, 0, `verify: ${verify.stdout.trim()}`)
  })

  t.test(`${transport}: SIGTERM and SIGINT flush and unmount cleanly`, opts, async tt => {
    const dir = tmpDir(`signal-${transport}`)
    tt.teardown(() => cleanup(dir, t))
    const store = path.join(dir, 'store')
    const mnt = path.join(dir, 'mnt')
    await must(process.execPath, CLI, 'create', store, '--size', '16M')
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const child = await mountForeground(store, mnt, ['--transport', transport])
      const data = Buffer.alloc(8192, signal.length)
      writeAt(path.join(mnt, 'current.img'), 4096, data)
      const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
      child.kill(signal)
      tt.equal(await exited, 0, `${signal}: the daemon exits 0`)
      tt.notOk(isMounted(mnt), `${signal}: the mount is gone`)
      const status = JSON.parse((await logdisk('status', store, '--json')).stdout)
      tt.equal(status.index.checkpointSeq, status.index.seq, `${signal}: the index was checkpointed on the way out`)
      tt.equal(status.recovery.replayedEntries, 0, `${signal}: nothing to replay on the next open`)
    }
  })

  t.test(`${transport}: a slow stop step is named in the daemon log while it runs, and every stop logs where its time went`, opts, async tt => {
    const dir = tmpDir(`unmount-slow-${transport}`)
    tt.teardown(() => cleanup(dir, t))
    const store = path.join(dir, 'store')
    const mnt = path.join(dir, 'mnt')
    await must(process.execPath, CLI, 'create', store, '--size', '16M')
    const m = await run(process.execPath, [CLI, 'mount', store, mnt, '--transport', transport], { env: { LOGDISK_FAULTS: 'unmount-slow', LOGDISK_SLOW_STOP_STEP_MS: '300' } })
    tt.equal(m.code, 0, `mounted: ${m.stderr}`)
    const data = Buffer.alloc(8192, 0x3d)
    writeAt(path.join(mnt, 'current.img'), 4096, data)
    const asked = Date.now()
    const u = await logdisk('unmount', mnt)
    tt.equal(u.code, 0, `unmount: ${(u.stderr || u.stdout).trim()}`)
    tt.notOk(isMounted(mnt), 'no mount left')
    const lines = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8').split('\n').filter(Boolean).map(l => JSON.parse(l) as { level: number, time: number, msg: string, ms?: Record<string, number> })
    const recent = lines.filter(l => l.time >= asked)
    tt.ok(recent.some(l => l.level === 40 && l.msg === 'stopping: still detaching the mount after 0.3 s'), 'the slow step was warned about while it ran')
    tt.notOk(recent.some(l => l.level === 40 && /still (flushing|closing)/.test(l.msg)), 'the quick steps were not')
    const done = recent.find(l => l.msg === 'unmounted')
    tt.ok(done && (done.ms?.['detaching the mount'] ?? 0) >= 1500, `the unmounted line gives each step's time: ${JSON.stringify(done?.ms)}`)
    tt.ok(done && typeof done.ms?.['flushing the store'] === 'number' && typeof done.ms?.['closing the store'] === 'number', 'flush and close are timed too')
    const again = await logdisk('mount', store, mnt, '--transport', transport)
    tt.equal(again.code, 0, `mounts again: ${again.stderr}`)
    tt.ok(readAt(path.join(mnt, 'current.img'), 4096, 8192).equals(data), 'the write reads back')
    await unmountOk(tt, mnt)
  })

  t.test(`${transport}: the transport fails to detach the mount: logdisk unmount still leaves no mount, says why, and the store is whole`, opts, async tt => {
    const dir = tmpDir(`unmount-fails-${transport}`)
    tt.teardown(() => cleanup(dir, t))
    const store = path.join(dir, 'store')
    const mnt = path.join(dir, 'mnt')
    await must(process.execPath, CLI, 'create', store, '--size', '16M')
    const m = await run(process.execPath, [CLI, 'mount', store, mnt, '--transport', transport], { env: { LOGDISK_FAULTS: 'unmount-fails' } })
    tt.equal(m.code, 0, `mounted: ${m.stderr}`)
    const data = Buffer.alloc(8192, 0x5c)
    writeAt(path.join(mnt, 'current.img'), 4096, data)
    const u = await logdisk('unmount', mnt)
    tt.equal(u.code, 0, `unmount: ${(u.stderr || u.stdout).trim()}`)
    if (CAPS[transport].autoUnmount) {
      // The watchdog of the daemon that exited may detach the mount before the CLI looks.
      tt.match(u.stdout, /^unmounted |could not detach it \(it logged: unmount failed; stopping anyway/, 'unmounted, or says what the daemon logged')
    } else tt.match(u.stdout, /could not detach it \(it logged: unmount failed; stopping anyway/, 'says what the daemon logged')
    tt.notOk(isMounted(mnt), 'no mount left')
    const status = JSON.parse((await logdisk('status', store, '--json')).stdout)
    tt.equal(status.recovery.replayedEntries, 0, 'the store was closed cleanly: nothing to replay')
    const again = await logdisk('mount', store, mnt, '--transport', transport)
    tt.equal(again.code, 0, `mounts again: ${again.stderr}`)
    tt.ok(readAt(path.join(mnt, 'current.img'), 4096, 8192).equals(data), 'the write reads back')
    await unmountOk(tt, mnt)
  })
}
