// The storage pool (F6, F10) through the CLI and real mounts: volumes of a few MiB with 2 MiB
// segments, so growth, drain, a full pool and mirroring all happen within seconds.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { Rng } from '../src/testing/rng'
import { CLI, canMount, cleanup, daemonLog, isMounted, logdisk, must, run, tmpDir } from './helpers/cli'
import { readAt, writeAt } from './helpers/image-file'

const skip = canMount()
t.jobs = 3 // the tests share nothing but the machine; much of their time is waiting
const MiB = 1024 * 1024
const SEG = 2 * MiB
/** The daemon's pool tick: growth and drains happen within a fraction of a second. */
const TICK_ENV = { LOGDISK_POOL_TICK_MS: '200' }

interface Vol { dir: string, state: string, capacityBytes: number, usedBytes: number, segments: number, internal: boolean }
interface PoolStatus { volumes: Vol[], useFraction: number, warnings: string[] }

async function ok (...args: string[]): Promise<string> {
  const r = await logdisk(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

async function mount (store: string, mnt: string): Promise<void> {
  const r = await run(process.execPath, [CLI, 'mount', store, mnt], { env: TICK_ENV })
  if (r.code !== 0) throw new Error(`mount ${store}: ${r.stderr}`)
}

async function poolList (store: string): Promise<PoolStatus> {
  return JSON.parse(await ok('pool', 'list', store, '--json'))
}

function vol (status: PoolStatus, dir: string): Vol {
  const v = status.volumes.find(v => v.dir === dir)
  if (!v) throw new Error(`${dir} is not in the pool: ${JSON.stringify(status.volumes.map(v => v.dir))}`)
  return v
}

async function waitFor<T> (what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

const pattern = (seed: number, n: number): Buffer => new Rng(seed).bytes(n)

const segFiles = (dir: string): string[] => fs.existsSync(dir) ? fs.readdirSync(dir).filter(f => /^seg-\d+\.log$/.test(f)).sort() : []
const uuidOf = (store: string): string => JSON.parse(fs.readFileSync(path.join(store, 'store.json'), 'utf8')).uuid
const marker = (dir: string): { id: string, assignedTo: string | null, capacityBytes: number | null } => JSON.parse(fs.readFileSync(path.join(dir, '.logdisk-volume.json'), 'utf8'))
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

/** A store on pool volumes A (assigned, `capA`) and B (spare, `capB`). */
async function storeOnAB (dir: string, capA: string, capB: string, name = 'store'): Promise<{ store: string, A: string, B: string, mnt: string, img: string }> {
  const store = path.join(dir, name)
  const A = path.join(dir, `${name}-A`)
  const B = path.join(dir, `${name}-B`)
  await ok('create', store, '--size', '64M', '--segment-size', '2M', '--pool', A, '--pool', B)
  const volumes = JSON.parse(fs.readFileSync(path.join(store, 'pool.json'), 'utf8')).volumes as Array<{ dir: string, grown?: boolean }>
  if (volumes.find(v => v.dir === A)?.grown === true) throw new Error(`create --pool marked ${A} as taken by the pool itself (an automatic shrink could give it back)`)
  await ok('pool', 'add', store, A, '--capacity', capA)
  await ok('pool', 'add', store, B, '--capacity', capB, '--spare')
  const mnt = path.join(dir, `${name}-mnt`)
  return { store, A, B, mnt, img: path.join(mnt, 'current.img') }
}

t.test('grows onto a spare when use crosses pool.growAt; writing stays on the old volume until it is full', { skip }, async t => {
  const dir = tmpDir('pool-grow')
  t.teardown(() => cleanup(dir, t))
  const { store, A, B, mnt, img } = await storeOnAB(dir, '16M', '16M') // A: 8 segments
  t.equal((await logdisk('policy', 'set', store, 'pool.growAt=0.8')).code, 0) // the 7th of 8 crosses it
  let p = await poolList(store)
  t.equal(vol(p, A).state, 'assigned', 'create --pool: the first directory holds the first segment')
  t.equal(vol(p, B).state, 'spare', 'the second stays spare')
  t.equal(vol(p, A).capacityBytes, 16 * MiB, 'pool add --capacity sets the capacity')
  await mount(store, mnt)

  // Write 1 MiB at a time and look at the volumes (markers, segment files) after each write.
  const uuid = uuidOf(store)
  const data = pattern(1, 24 * MiB)
  let grewAt: number | undefined
  let firstOnB: number | undefined
  let writtenTo = 0
  for (let mb = 0; mb < 24 && firstOnB === undefined; mb++) {
    writeAt(img, mb * MiB, data.subarray(mb * MiB, (mb + 1) * MiB))
    writtenTo = (mb + 1) * MiB
    if (grewAt === undefined && marker(B).assignedTo === uuid) {
      grewAt = segFiles(path.join(A, uuid)).length
      t.same(segFiles(path.join(B, uuid)), [], `B was assigned with nothing on it yet (at ${mb + 1} MiB written)`)
    }
    if (segFiles(path.join(B, uuid)).length > 0) firstOnB = segFiles(path.join(A, uuid)).length
  }
  t.equal(grewAt, 7, 'the spare was assigned when A held 7 of its 8 segments (87.5% >= 80%)')
  t.equal(firstOnB, 8, 'the first segment on B came once A was full')
  p = await poolList(store)
  t.equal(vol(p, B).state, 'assigned', 'pool list shows B assigned')
  t.equal(vol(p, A).usedBytes, 16 * MiB, 'and A full')
  t.ok(segFiles(path.join(B, uuidOf(store))).length >= 1, 'B holds the newest segment file')
  t.equal(marker(B).assignedTo, uuidOf(store), 'B\'s marker names the store')
  t.match((await ok('pool', 'list', store)), /assigned\t16\.0 MiB\t16\.0 MiB\t8\t.*store-A/, 'pool list shows A full')
  t.equal(sha(readAt(img, 0, writtenTo)), sha(data.subarray(0, writtenTo)), `every written byte reads back (${writtenTo / MiB} MiB)`)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify after growth: ${verify.stdout.trim().split('\n').pop()}`)
})

t.test('pool.mode=ask: crossing pool.growAt assigns nothing; status, pool list and the daemon log say what to run', { skip }, async t => {
  const dir = tmpDir('pool-ask')
  t.teardown(() => cleanup(dir, t))
  const { store, B, mnt, img } = await storeOnAB(dir, '8M', '8M')
  t.equal((await logdisk('policy', 'set', store, 'pool.mode=ask')).code, 0)
  await mount(store, mnt)
  // 10 MiB in all: 6 segments of A and B's 8, and the one made ahead of its roll (which pool
  // use counts): under pool.growAt once B is added.
  const data = pattern(2, 10 * MiB)
  writeAt(img, 0, data.subarray(0, 7 * MiB)) // the 4th of 4 segments: 100% of A
  await new Promise(resolve => setTimeout(resolve, 1000)) // five pool ticks
  const p = await poolList(store)
  t.equal(vol(p, B).state, 'spare', 'nothing was assigned')
  const addHint = new RegExp(`crossed pool\\.growAt=0\\.95; add a volume with: logdisk pool add ${store} DIR`)
  t.match(p.warnings.join('\n'), addHint, 'pool list (mounted) warns and says what to run')
  t.match(await daemonLog(store, addHint), addHint, 'the daemon log says it')
  const mountedStatus = await logdisk('status', store)
  t.match(mountedStatus.stdout, addHint, 'status (mounted) says it')

  // Ask means no growth: the pool is full once A is.
  let enospc: NodeJS.ErrnoException | undefined
  try { writeAt(img, 7 * MiB, data.subarray(7 * MiB)) } catch (err) { enospc = err as NodeJS.ErrnoException }
  t.equal(enospc?.code, 'ENOSPC', 'writes past the full volume fail with ENOSPC')
  t.equal(vol(await poolList(store), B).state, 'spare', 'still nothing assigned')

  t.equal((await logdisk('unmount', mnt)).code, 0)
  const status = JSON.parse(await ok('status', store, '--json'))
  t.match(status.pool.warnings.join('\n'), addHint, 'status --json of the unmounted store warns too')
  t.match(await ok('pool', 'list', store), addHint, 'and so does pool list')

  // Doing what it says lets writes continue.
  t.equal((await logdisk('pool', 'add', store, B)).code, 0)
  await mount(store, mnt)
  writeAt(img, 7 * MiB, data.subarray(7 * MiB))
  t.equal(sha(readAt(img, 0, data.length)), sha(data), 'after pool add, the rest is written and all of it reads back')
  t.notMatch((await poolList(store)).warnings.join('\n'), /crossed pool\.growAt/, 'the warning is gone')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('drain under live ext4 writes releases the volume; a second store sharing the pool takes the spare', { skip }, async t => {
  const dir = tmpDir('pool-drain')
  t.teardown(() => cleanup(dir, t))
  const { store, A, B, mnt, img } = await storeOnAB(dir, '8M', '16M')
  // A second store listing B: created on its own C, with B among its spares.
  const store2 = path.join(dir, 'store2')
  const C = path.join(dir, 'store2-C')
  await ok('create', store2, '--size', '64M', '--segment-size', '2M', '--pool', C, '--pool', B)
  await ok('pool', 'add', store2, C, '--capacity', '4M')
  t.equal(vol(await poolList(store2), C).state, 'assigned', 'store2 runs on C')
  t.equal(vol(await poolList(store2), B).state, 'spare', 'B is a spare of both stores')

  await mount(store, mnt)
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  await must('mkfs.ext4', '-q', '-F', img)
  await must('mount', '-o', 'loop', img, fsDir)
  const expected = new Map<string, string>()
  let n = 0
  const writeFile = async (size: number): Promise<void> => {
    const name = `f${n++}`
    const data = pattern(1000 + n, size)
    await fs.promises.writeFile(path.join(fsDir, name), data)
    const fh = await fs.promises.open(path.join(fsDir, name), 'r')
    await fh.sync()
    await fh.close()
    expected.set(name, sha(data))
  }
  // Fill A so that the pool grows onto B, until B holds two segment files: the first file on
  // B can be the next segment, made ahead and still empty, which a drain discards instead of
  // moving (under load the loop stopped there and the drain moved nothing).
  await waitFor('the pool to grow onto B', async () => {
    await writeFile(512 * 1024)
    return segFiles(path.join(B, uuidOf(store))).length >= 2
  }, 60_000)
  const grown = await poolList(store)
  t.equal(vol(grown, A).segments, 4, 'A is full')
  t.equal(vol(await poolList(store2), B).state, 'other-store', 'store2 sees B taken by the other store')

  // Live writes while the pool drains B.
  let stop = false
  let during = 0
  const writer = (async () => {
    while (!stop) { await writeFile(64 * 1024 + (n % 7) * 4096); during++ }
  })()
  const writerDone = writer.catch(err => err as Error)
  t.equal((await logdisk('pool', 'add', store, A, '--capacity', '64M')).code, 0, 'A grows to 64 MiB: use falls under pool.shrinkAt')
  await waitFor('B to be drained and released', async () => marker(B).assignedTo === null, 40_000)
    .catch(err => {
      stop = true
      const log = fs.readFileSync(path.join(store, 'daemon.log'), 'utf8').split('\n').filter(l => /pool|drain|error/i.test(l)).slice(-8).join('\n')
      throw new Error(`${(err as Error).message}; the daemon log says:\n${log}`)
    })
  await new Promise(resolve => setTimeout(resolve, 300))
  stop = true
  const released = await poolList(store)
  t.equal(vol(released, B).state, 'spare', 'pool list says B is spare')
  t.equal(await writerDone, undefined, 'the writer saw no error')
  t.ok(during > 0, `${during} files were written (and fsynced) during the drain`)
  t.equal(vol(released, B).segments, 0, 'no segment of the store is left on B')
  t.same(segFiles(path.join(B, uuidOf(store))), [], 'B holds no segment file of the store')
  t.equal(marker(B).assignedTo, null, 'B\'s marker says spare')
  const log = await daemonLog(store, /drained and released the pool volume to spare/)
  t.match(log, /draining the emptiest volume/, 'the daemon log says it drained')
  t.match(log, /"moved":[1-9].*drained and released the pool volume to spare/, 'and moved segments off B')

  // Everything reads back after a clean remount; ext4 is clean.
  await must('umount', fsDir)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  const verify = await logdisk('verify', store)
  t.equal(verify.code, 0, `verify after the drain: ${verify.stdout.trim().split('\n').pop()}`)
  await mount(store, mnt)
  await must('mount', '-o', 'loop,ro', img, fsDir)
  const bad: string[] = []
  for (const [name, sum] of expected) if (sha(fs.readFileSync(path.join(fsDir, name))) !== sum) bad.push(name)
  t.same(bad, [], `all ${expected.size} files have their checksums`)
  await must('umount', fsDir)
  const fsck = await run('e2fsck', ['-fn', img])
  t.equal(fsck.code, 0, `e2fsck -fn is clean: ${fsck.stdout.trim().split('\n').pop()}`)
  t.equal(vol(await poolList(store), B).state, 'spare', 'B is still spare after the remount')

  // store2 outgrows C and takes the spare B released by the first store.
  const mnt2 = path.join(dir, 'mnt2')
  await mount(store2, mnt2)
  const img2 = path.join(mnt2, 'current.img')
  const data2 = pattern(7, 6 * MiB)
  writeAt(img2, 0, data2)
  const p2 = await poolList(store2)
  t.equal(vol(p2, B).state, 'assigned', 'store2 took B')
  t.ok(vol(p2, B).segments > 0, 'and writes its segments there')
  t.equal(marker(B).assignedTo, uuidOf(store2), 'B\'s marker names store2')
  t.ok(segFiles(path.join(B, uuidOf(store2))).length > 0, 'store2\'s segment files are in B/<its uuid>')
  t.equal(vol(await poolList(store), B).state, 'other-store', 'the first store sees B taken')
  t.equal(sha(readAt(img2, 0, data2.length)), sha(data2), 'store2 reads back what it wrote')
  t.equal((await logdisk('unmount', mnt2)).code, 0)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.equal((await logdisk('verify', store2)).code, 0, 'store2 verifies')
})

t.test('full pool: ENOSPC to the writer, nothing damaged, still mountable; a new volume lets writes continue without a remount', { skip }, async t => {
  const dir = tmpDir('pool-full')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const A = path.join(dir, 'A')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(mnt, 'current.img')
  await ok('create', store, '--size', '64M', '--segment-size', '2M', '--pool', A)
  await ok('pool', 'add', store, A, '--capacity', '8M')
  await mount(store, mnt)
  const data = pattern(3, 16 * MiB)
  const model = Buffer.alloc(64 * MiB)
  /** Writes 128 KiB at a time from `from`; returns where the first failure was and its error. */
  const fill = (fd: number, from: number, to: number): { at: number, err?: NodeJS.ErrnoException } => {
    for (let at = from; at < to;) {
      let n: number
      try {
        n = fs.writeSync(fd, data, at, Math.min(128 * 1024, to - at), at)
      } catch (err) {
        return { at, err: err as NodeJS.ErrnoException }
      }
      data.copy(model, at, at, at + n)
      at += n
    }
    return { at: to }
  }
  let fd = fs.openSync(img, 'r+')
  const first = fill(fd, 0, data.length)
  t.equal(first.err?.code, 'ENOSPC', `the writer gets ENOSPC (after ${(first.at / MiB).toFixed(2)} MiB)`)
  t.ok(first.at > 7 * MiB && first.at < 8 * MiB, 'once the 8 MiB volume is full')
  fs.fsyncSync(fd)
  // The failed request may have landed its first blocks (entries before the full segment):
  // each of its blocks is old (zeros) or new, a prefix new; nothing else changed.
  const B = 4096
  const chunk = readAt(img, first.at, 128 * 1024)
  let landed = 0
  while (landed < 32 && chunk.subarray(landed * B, (landed + 1) * B).equals(data.subarray(first.at + landed * B, first.at + (landed + 1) * B))) landed++
  t.ok(chunk.subarray(landed * B).equals(Buffer.alloc(chunk.length - landed * B)), `the failed request: ${landed} blocks landed, the rest kept their old data`)
  chunk.copy(model, first.at)
  t.equal(sha(readAt(img, 0, 16 * MiB)), sha(model.subarray(0, 16 * MiB)), 'everything written before ENOSPC reads back; nothing else changed')
  const p = await poolList(store)
  t.match(p.warnings.join('\n'), /no spare volume is left; add one with: logdisk pool add/, 'pool list says what to do')
  t.equal((await logdisk('verify', store)).code, 0, 'verify (mounted, full) is clean')
  fs.closeSync(fd)

  // Still mountable and readable while full.
  t.equal((await logdisk('unmount', mnt)).code, 0, 'a full store unmounts')
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, 16 * MiB)), sha(model.subarray(0, 16 * MiB)), 'a full store mounts again and reads back')
  fd = fs.openSync(img, 'r+')
  const again = fill(fd, first.at, data.length)
  t.equal(again.err?.code, 'ENOSPC', 'still ENOSPC after the remount')

  // Adding a volume: the same open file writes on, no remount.
  const C = path.join(dir, 'C')
  const added = await logdisk('pool', 'add', store, C, '--capacity', '16M')
  t.equal(added.code, 0, added.stderr)
  const rest = fill(fd, again.at, data.length)
  t.equal(rest.err, undefined, 'writes continue after pool add')
  if (rest.err) t.comment(`stopped at ${rest.at} of ${data.length}; pool: ${JSON.stringify(await poolList(store))}`)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  t.equal(sha(readAt(img, 0, 64 * MiB)), sha(model), 'the whole image matches what was written')
  t.ok(segFiles(path.join(C, uuidOf(store))).length > 0, 'the new segments are on the new volume')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, 64 * MiB)), sha(model), 'and after a remount')
  t.equal((await logdisk('unmount', mnt)).code, 0)

  // pool remove drains first: refused while nothing else has room, then done onto a new volume.
  const refused = await logdisk('pool', 'remove', store, C)
  t.not(refused.code, 0, 'pool remove of a volume whose segments have nowhere to go fails')
  t.match(refused.stderr, new RegExp(`cannot drain ${C}: no other pool volume has room .*add one first`), `one line saying why: ${refused.stderr.trim()}`)
  t.equal(vol(await poolList(store), C).state, 'assigned', 'C is still in the pool, assigned')
  const D = path.join(dir, 'D')
  await ok('pool', 'add', store, D, '--capacity', '32M')
  const removed = await logdisk('pool', 'remove', store, C)
  t.equal(removed.code, 0, removed.stderr)
  t.match(removed.stdout, /removed .*C \([1-9]\d* segment\(s\) moved\)/, removed.stdout.trim())
  t.notOk((await poolList(store)).volumes.some(v => v.dir === C), 'C is out of the pool')
  t.same(segFiles(path.join(C, uuidOf(store))), [], 'no segment file is left on C')
  t.equal(marker(C).assignedTo, null, 'C is released')
  const vr = await logdisk('verify', store); t.equal(vr.code, 0, 'verify is clean after the remove: ' + vr.stdout + vr.stderr)
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, 64 * MiB)), sha(model), 'everything reads back from A and D')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('full pool under ext4: the filesystem sees an I/O error; synced files survive; a new volume lets it go on', { skip }, async t => {
  const dir = tmpDir('pool-full-ext4')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const A = path.join(dir, 'A')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(mnt, 'current.img')
  const fsDir = path.join(dir, 'fs')
  fs.mkdirSync(fsDir)
  await ok('create', store, '--size', '64M', '--segment-size', '2M', '--pool', A)
  await ok('pool', 'add', store, A, '--capacity', '12M')
  await mount(store, mnt)
  await must('mkfs.ext4', '-q', '-F', img)
  await must('mount', '-o', 'loop', img, fsDir)
  const kept = pattern(4, 1 * MiB)
  fs.writeFileSync(path.join(fsDir, 'kept'), kept)
  await must('sync', '-f', path.join(fsDir, 'kept'))
  const big = await run('dd', ['if=/dev/urandom', `of=${path.join(fsDir, 'big')}`, 'bs=1M', 'count=40', 'conv=fsync'])
  t.not(big.code, 0, 'writing past the pool fails')
  const ioError = big.stderr.split('\n').find(l => /Input\/output error|No space left/.test(l))
  t.ok(ioError, `the writer on ext4 sees the error: ${ioError}`)
  t.ok(isMounted(mnt), 'the logdisk mount stays up')
  t.match((await poolList(store)).warnings.join('\n'), /no spare volume is left/, 'pool list says the pool is full')

  t.equal((await logdisk('pool', 'add', store, path.join(dir, 'C'), '--capacity', '64M')).code, 0)
  await run('umount', [fsDir])
  const fsck = await run('e2fsck', ['-fy', img])
  t.ok(fsck.code === 0 || fsck.code === 1, `e2fsck -fy can repair what the failed writes left (exit ${fsck.code})`)
  await must('mount', '-o', 'loop', img, fsDir)
  t.equal(sha(fs.readFileSync(path.join(fsDir, 'kept'))), sha(kept), 'the synced file survives')
  const more = pattern(5, 4 * MiB)
  fs.writeFileSync(path.join(fsDir, 'more'), more)
  await must('sync', '-f', path.join(fsDir, 'more'))
  t.equal(sha(fs.readFileSync(path.join(fsDir, 'more'))), sha(more), 'new files are written, same logdisk mount')
  await must('umount', fsDir)
  t.equal((await run('e2fsck', ['-fn', img])).code, 0, 'e2fsck -fn is clean')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean')
})

t.test('a read-only pool directory: named in pool list and in the error; other volumes stay readable and writable', { skip }, async t => {
  const dir = tmpDir('pool-ro')
  t.teardown(() => cleanup(dir, t))
  const T = path.join(dir, 'T')
  fs.mkdirSync(T)
  await must('mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', T) // cleanup() unmounts it
  const store = path.join(dir, 'store')
  const A = path.join(dir, 'A')
  const mnt = path.join(dir, 'mnt')
  const img = path.join(mnt, 'current.img')
  await ok('create', store, '--size', '64M', '--segment-size', '2M', '--pool', T, '--pool', A)
  await ok('pool', 'add', store, T, '--capacity', '4M') // 2 segments, then A
  await ok('pool', 'add', store, A, '--capacity', '16M', '--spare')
  await ok('policy', 'set', store, 'pool.shrinkAt=0.05') // no drain of T: this test wants segments on it
  await mount(store, mnt)
  const data = pattern(6, 7 * MiB)
  writeAt(img, 0, data)
  t.same(segFiles(path.join(T, uuidOf(store))).length, 2, 'T holds the first two segments')
  // A fresh mount holds no file on T open, so T can be remounted read-only under it.
  t.equal((await logdisk('unmount', mnt)).code, 0)
  await mount(store, mnt)
  await must('mount', '-o', 'remount,ro', T)

  const p = await poolList(store)
  t.equal(vol(p, T).state, 'read-only', 'pool list says T is read-only')
  t.match(p.warnings.join('\n'), new RegExp(`pool volume ${T} is read-only`), 'and warns naming it')
  const tail = 5 * MiB // in segment 2 or later: on A
  t.equal(sha(readAt(img, tail, data.length - tail)), sha(data.subarray(tail)), 'data on the other volume reads back')
  const more = pattern(8, 6 * MiB)
  writeAt(img, 20 * MiB, more)
  t.equal(sha(readAt(img, 20 * MiB, more.length)), sha(more), 'writes go on, to the writable volume')
  t.same(segFiles(path.join(T, uuidOf(store))).length, 2, 'nothing new went to T')

  let headErr: NodeJS.ErrnoException | undefined
  let head: Buffer | undefined
  try { head = readAt(img, 0, MiB) } catch (err) { headErr = err as NodeJS.ErrnoException }
  if (headErr) {
    t.equal(headErr.code, 'EIO', 'a read of data on T fails with EIO, not wrong data')
    const named = new RegExp(`"err":"[^"]*${T}/`)
    t.match(await daemonLog(store, named), named, 'the daemon log names T\'s directory')
  }
  t.equal(head && sha(head), sha(data.subarray(0, MiB)), 'data on the read-only volume stays readable')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  await must('mount', '-o', 'remount,rw', T)
  t.equal((await logdisk('verify', store)).code, 0, 'verify is clean once T is writable again')
})

t.test('a missing pool directory: named in the errors; other volumes readable; back in place, everything reads', { skip }, async t => {
  const dir = tmpDir('pool-missing')
  t.teardown(() => cleanup(dir, t))
  const { store, A: M, B: A, mnt, img } = await storeOnAB(dir, '4M', '16M') // M: first 2 segments; A: the rest
  await ok('policy', 'set', store, 'pool.shrinkAt=0.05') // no drain of M: this test wants segments on it
  await mount(store, mnt)
  const data = pattern(9, 7 * MiB)
  writeAt(img, 0, data)
  t.equal((await logdisk('unmount', mnt)).code, 0)
  const gone = M + '.gone'
  const head = (): Buffer => readAt(img, 0, MiB)
  const readErr = (): string | undefined => { try { head(); return undefined } catch (err) { return (err as NodeJS.ErrnoException).code } }

  // Vanishes while mounted.
  await mount(store, mnt)
  fs.renameSync(M, gone)
  t.equal(readErr(), 'EIO', 'a read of data on the missing directory fails with EIO')
  const named = new RegExp(`"err":"[^"]*${M}/[^"]*missing`)
  t.match(await daemonLog(store, named), named, 'the daemon log names the directory')
  const p = await poolList(store)
  t.equal(vol(p, M).state, 'missing', 'pool list says it is missing')
  t.match(p.warnings.join('\n'), new RegExp(`pool volume ${M} is missing`), 'and warns naming it')
  t.equal(sha(readAt(img, 5 * MiB, 2 * MiB)), sha(data.subarray(5 * MiB)), 'data on the other volume reads back')
  fs.renameSync(gone, M)
  t.equal(sha(head()), sha(data.subarray(0, MiB)), 'back in place, its data reads again')
  t.equal((await logdisk('unmount', mnt)).code, 0)

  // Missing when the store opens.
  fs.renameSync(M, gone)
  const status = await logdisk('status', store)
  t.match(status.stderr, new RegExp(`pool volume ${M} is missing`), 'opening the store names the missing directory')
  await mount(store, mnt)
  t.equal(readErr(), 'EIO', 'its data is an I/O error, not zeros')
  t.equal(sha(readAt(img, 5 * MiB, 2 * MiB)), sha(data.subarray(5 * MiB)), 'data on the other volume reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  fs.renameSync(gone, M)
  t.equal((await logdisk('verify', store)).code, 0, 'back in place: verify is clean')

  // Missing when the store opens, holding the newest segments (those the index checkpoint is in).
  fs.renameSync(A, A + '.gone')
  const refused = await logdisk('mount', store, mnt)
  t.not(refused.code, 0, 'a store whose newest segments are on a missing directory is not opened (it would go back in time)')
  t.match(refused.stderr, new RegExp(`^logdisk: .*pool volume ${A}.* is missing`), 'the error names the directory')
  fs.renameSync(A + '.gone', A)
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, data.length)), sha(data), 'everything back in place: everything reads back')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})

t.test('mirror=2: rm -rf of one pool directory loses nothing; verify reports the lost copies; pool repair restores them', { skip }, async t => {
  const dir = tmpDir('pool-mirror')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const [A, B, C] = ['A', 'B', 'C'].map(n => path.join(dir, n))
  const mnt = path.join(dir, 'mnt')
  const img = path.join(mnt, 'current.img')
  await ok('create', store, '--size', '64M', '--segment-size', '2M', '--pool', A, '--pool', B)
  t.equal((await logdisk('policy', 'set', store, 'mirror=2')).code, 0)
  t.equal((await logdisk('pool', 'add', store, B)).code, 0)
  // Segment 0, made before mirror=2, holds nothing yet: the open of `pool add` gave it its second copy (recovery).
  t.match(await ok('pool', 'repair', store), /made [01] cop/, 'repair copies the segment made before mirror=2, if the open did not')
  const uuid = uuidOf(store)
  await mount(store, mnt)
  const data = pattern(11, 9 * MiB)
  writeAt(img, 0, data)
  const onA = segFiles(path.join(A, uuid))
  t.ok(onA.length >= 5, `${onA.length} segments written`)
  t.same(segFiles(path.join(B, uuid)), onA, 'every segment has a copy on A and on B')
  // Past the header page (which records each copy's creation time), the copies are the same bytes.
  const same = onA.filter(f => fs.readFileSync(path.join(A, uuid, f)).subarray(4096).equals(fs.readFileSync(path.join(B, uuid, f)).subarray(4096)))
  t.same(same, onA, 'the log entries of every segment are identical on A and B')

  fs.rmSync(A, { recursive: true, force: true })
  t.equal(sha(readAt(img, 0, data.length)), sha(data), 'after rm -rf A, everything reads back (mounted)')
  const verify = await logdisk('verify', store)
  t.not(verify.code, 0, 'verify fails')
  const lost = verify.stdout.split('\n').filter(l => /the copy on pool volume .* is lost; run logdisk pool repair/.test(l))
  t.ok(lost.length >= onA.length - 1, `verify reports the lost copies (${lost.length})`)
  t.match(lost[0] ?? '', new RegExp(`\\(${A}/${uuid}\\)`), 'naming the directory')
  t.equal((await logdisk('unmount', mnt)).code, 0)
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, data.length)), sha(data), 'after a remount without A, everything reads back from B')

  t.equal((await logdisk('pool', 'add', store, C)).code, 0)
  const repaired = await logdisk('pool', 'repair', store)
  t.equal(repaired.code, 0, repaired.stderr)
  t.match(repaired.stdout, /made \d+ copies/, `pool repair: ${repaired.stdout.trim()}`)
  const v2 = await logdisk('verify', store)
  t.equal(v2.code, 0, `verify is clean after repair: ${v2.stdout.trim().split('\n').pop()}`)
  t.same(segFiles(path.join(C, uuid)), segFiles(path.join(B, uuid)), 'every segment has a copy on C')
  const more = pattern(12, 3 * MiB)
  writeAt(img, 30 * MiB, more)
  t.equal((await logdisk('unmount', mnt)).code, 0)

  // Now B goes: C's copies carry everything.
  fs.rmSync(B, { recursive: true, force: true })
  await mount(store, mnt)
  t.equal(sha(readAt(img, 0, data.length)), sha(data), 'after rm -rf B too, the first data reads back from C')
  t.equal(sha(readAt(img, 30 * MiB, more.length)), sha(more), 'and so does what was written after the repair')
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
