// Bad-input matrix (issue 10), part 4, with a running daemon: outputs that would be written
// through the store's own mount (refused before anything is written: the daemon would wait on
// itself), a daemon killed in the middle of a command (the command fails and cleans up), and
// copied and moved stores mounted for real.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { canMount, daemonPid, isMounted, logdisk, must, run } from './helpers/cli'
import { MiB, cli, freshStore, newOut, pattern, refused, succeeded, writeStore, matrixFile } from './helpers/matrix'
import { checksumTree, diffTrees } from './helpers/tree'

const skip = canMount()
const m = matrixFile('daemon', skip, { sizeArg: '256M' })

/** The store's files that a quiet daemon does not touch (its log and pid file excluded). */
function storeSums (store: string): Map<string, string> {
  const sums = checksumTree(store)
  for (const k of [...sums.keys()]) if (k === 'daemon.log' || k === 'daemon.json' || k === 'holder.json') sums.delete(k)
  return sums
}

async function settled (store: string): Promise<void> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const s = JSON.parse((await logdisk('status', store, '--json')).stdout)
    if (s.index.pendingBlocks === 0 && s.index.checkpointSeq === s.index.seq) return
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

/** Reads a little of the image in another process (a hung mount must not hang the test). */
async function servesReads (mnt: string): Promise<boolean> {
  return (await run('dd', [`if=${path.join(mnt, 'current.img')}`, 'of=/dev/null', 'bs=4096', 'count=4', 'iflag=direct', 'status=none'], { timeoutMs: 20_000 })).code === 0
}

t.test('outputs inside the store\'s own mount are refused before anything is written', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'inside-case')
  fs.mkdirSync(dir)
  const store = await freshStore(m.fx, path.join(dir, 'store'))
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  let loop = ''
  t.teardown(async () => {
    await run('umount', ['-l', fsDir])
    if (loop) await run('losetup', ['-d', loop])
  })
  succeeded(t, await cli(['mount', store, mnt]), 'mount')
  const pid = daemonPid(store)
  const link = path.join(dir, 'link')
  fs.symlinkSync(mnt, link)
  const outsides = [
    { out: path.join(mnt, 'x.img'), why: `it is on the mount at ${mnt}` },
    { out: path.join(mnt, 'current.img'), why: `it is on the mount at ${mnt}` },
    { out: path.join(link, 'y.img'), why: `it is on the mount at ${mnt}` }
  ]
  const run3 = async (label: string): Promise<void> => {
    await settled(store)
    const before = storeSums(store)
    const listing = fs.readdirSync(mnt).sort()
    for (const { out, why } of outsides) {
      for (const args of [['restore', store, '--at', 's1', '--out', out, '--force'], ['export', store, 's1', '--out', out, '--force'], ['send', store, 's2', '--out', out, '--force']]) {
        const r = await cli(args)
        refused(t, r, new RegExp(`^logdisk: refusing to write ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${why.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), `${label}: ${args[0]} --out ${path.relative(dir, out)}`)
      }
    }
    t.same(fs.readdirSync(mnt).sort(), listing, `${label}: nothing appeared in the mount`)
    t.same(diffTrees(before, storeSums(store)), [], `${label}: the store is byte-identical`)
    t.ok(await servesReads(mnt), `${label}: the daemon still serves reads`)
    t.doesNotThrow(() => process.kill(pid, 0), `${label}: the daemon is alive`)
  }
  await run3('on the mount')

  // A filesystem on a loop device over the image: writing there goes through the daemon too.
  loop = (await must('losetup', '-f', '--show', path.join(mnt, 'current.img'))).trim()
  // No lazy initialisation: ext4 would go on writing its inode tables in the background.
  await must('mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', loop)
  await must('mount', '-o', 'noinit_itable,commit=300', loop, fsDir)
  await must('sync', '-f', fsDir)
  outsides.push({ out: path.join(fsDir, 'z.img'), why: `its filesystem sits on ${loop} (backed by ${path.join(mnt, 'current.img')})` })
  await run3('with ext4 on a loop device')
  await must('umount', fsDir)
  await must('losetup', '-d', loop)
  loop = ''
  succeeded(t, await cli(['unmount', mnt]), 'unmount')
  succeeded(t, await cli(['verify', store]), 'verify')
})

t.test('a command whose daemon is killed midway fails, says so, and leaves no half-written file', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'killed-case')
  fs.mkdirSync(dir)
  const store = await freshStore(m.fx, path.join(dir, 'store'))
  await writeStore(store, 8 * MiB, pattern(11, 96 * MiB), 'big')
  const mnt = path.join(dir, 'mnt')
  const out = newOut(dir)
  for (const [label, args] of [
    ['restore', (o: string) => ['restore', store, '--at', 'big', '--out', o]],
    ['export', (o: string) => ['export', store, 'big', '--out', o]]
  ] as const) {
    succeeded(t, await cli(['mount', store, mnt]), `${label}: mount`)
    const pid = daemonPid(store)
    const o = out()
    const partial = `${o}.partial`
    const running = cli(args(o))
    let killed = false
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      try {
        if (fs.statSync(partial).blocks > 0) { process.kill(pid, 'SIGKILL'); killed = true; break }
      } catch { /* not yet */ }
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    t.ok(killed, `${label}: the daemon was killed while ${path.basename(partial)} was being written`)
    const r = await running
    refused(t, r, new RegExp(`^logdisk: the mount daemon \\(pid ${pid}\\) died during ${label}; it did not finish \\(removed the half-written ${partial.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)`), label)
    t.notOk(fs.existsSync(partial), `${label}: no .partial left`)
    t.notOk(fs.existsSync(o), `${label}: no output`)
    // devfuse's watchdog detaches the dead daemon's mount by itself (a moment later);
    // fuse-native leaves a stale mount for `logdisk unmount` to remove.
    const gone = Date.now() + 10_000
    while (isMounted(mnt) && Date.now() < gone) await new Promise(resolve => setTimeout(resolve, 100))
    if (isMounted(mnt)) succeeded(t, await cli(['unmount', mnt]), `${label}: unmount removes the stale mount`)
    t.notOk(isMounted(mnt), `${label}: unmounted`)
  }
  succeeded(t, await cli(['verify', store]), 'the store verifies')
  const o = out()
  succeeded(t, await cli(['restore', store, '--at', 'big', '--out', o]), 'and restores once no daemon is in the way')
  const back = Buffer.alloc(MiB)
  const fd = fs.openSync(o, 'r')
  fs.readSync(fd, back, 0, MiB, 8 * MiB + 40 * MiB)
  fs.closeSync(fd)
  t.ok(back.equals(pattern(11, 96 * MiB).subarray(40 * MiB, 41 * MiB)), 'with the right data')
})

function writeImage (mnt: string, offset: number, data: Buffer): void {
  const fd = fs.openSync(path.join(mnt, 'current.img'), 'r+')
  fs.writeSync(fd, data, 0, data.length, offset)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
}

function readImage (mnt: string, offset: number, bytes: number): Buffer {
  const buf = Buffer.alloc(bytes)
  const fd = fs.openSync(path.join(mnt, 'current.img'), 'r')
  fs.readSync(fd, buf, 0, bytes, offset)
  fs.closeSync(fd)
  return buf
}

t.test('cp -a, then both mounted: each reads its own data, verify is clean on both; mv keeps working', { skip, timeout: 840_000 }, async t => {
  const dir = path.join(m.root, 'mounted-copies')
  fs.mkdirSync(dir)
  const a = await freshStore(m.fx, path.join(dir, 'A'))
  const b = path.join(dir, 'B')
  await must('cp', '-a', a, b)
  const ma = path.join(dir, 'ma')
  const mb = path.join(dir, 'mb')
  succeeded(t, await cli(['mount', a, ma]), 'mount the original')
  const aBefore = storeSums(a)
  refused(t, await cli(['mount', b, mb]), new RegExp(`^logdisk: ${b} is a copy of the store at ${a} .*logdisk adopt ${b}`), 'mount of the copy')
  t.notOk(isMounted(mb), 'the copy was not mounted')
  t.same(diffTrees(aBefore, storeSums(a)), [], 'the refused mount did not touch the original')
  succeeded(t, await cli(['adopt', b]), 'adopt the copy')
  succeeded(t, await cli(['mount', b, mb]), 'mount the adopted copy')
  const common = pattern(1, MiB)
  t.ok(readImage(ma, 0, MiB).equals(common) && readImage(mb, 0, MiB).equals(common), 'both show the data they share')
  const da = pattern(21, 3 * MiB)
  const db = pattern(22, 3 * MiB)
  writeImage(ma, 20 * MiB + 512, da) // unaligned on purpose
  writeImage(mb, 20 * MiB + 512, db)
  t.ok(readImage(ma, 20 * MiB + 512, da.length).equals(da), 'the original reads its own write')
  t.ok(readImage(mb, 20 * MiB + 512, db.length).equals(db), 'the copy reads its own write')
  succeeded(t, await cli(['snapshot', a, '--name', 'a-only']), 'snapshot of the original through its daemon')
  succeeded(t, await cli(['snapshot', b, '--name', 'b-only']), 'snapshot of the copy through its daemon')
  t.ok(fs.readdirSync(ma).includes('a-only.img') && !fs.readdirSync(ma).includes('b-only.img'), 'each mount lists its own snapshots')
  t.ok(fs.readdirSync(mb).includes('b-only.img') && !fs.readdirSync(mb).includes('a-only.img'), 'and only those')
  succeeded(t, await cli(['unmount', ma]), 'unmount the original')
  succeeded(t, await cli(['unmount', mb]), 'unmount the copy')
  for (const s of [a, b]) succeeded(t, await cli(['verify', s]), `verify ${path.basename(s)}`)

  // mv, then mount where it is now.
  const moved = path.join(dir, 'A-moved')
  fs.renameSync(a, moved)
  succeeded(t, await cli(['status', moved]), 'status after mv')
  succeeded(t, await cli(['mount', moved, ma]), 'mount after mv')
  t.ok(readImage(ma, 20 * MiB + 512, da.length).equals(da), 'the moved store serves its data')
  const dm = pattern(23, MiB)
  writeImage(ma, 40 * MiB, dm)
  t.ok(readImage(ma, 40 * MiB, MiB).equals(dm), 'and takes writes')
  succeeded(t, await cli(['unmount', ma]), 'unmount')
  succeeded(t, await cli(['verify', moved]), 'verify after mv')
  t.same(fs.readdirSync(path.join(b, 'segments')).filter(n => n.startsWith('seg-')).length > 0, true, 'the copy kept its own segments')
  t.notOk(fs.existsSync(path.join(dir, 'A')), 'nothing was written where the original used to be')
})
