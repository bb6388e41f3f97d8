// Snapshot criteria (002 Fig. 7-8): create/show/list/delete, and snapshot --criteria with full,
// partial, background copies, unmounted and mounted.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { openStore } from '../src/app/open'
import { Store } from '../src/store/store'
import { CLI, canMount, cleanup, logdisk, must, run, tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 16 << 20

interface Sidecar { kind: string, criteria: string, snapshot: string, seq: number, base: { snapshot: string, seq: number } | null, blockBytes: number, startBlock: number, endBlock: number, blocks: number, ranges: Array<[number, number]> }

async function withStore<T> (dir: string, fn: (s: Store) => Promise<T>): Promise<T> {
  // A detached background copy records its run (waitForRun) a moment before it closes the
  // store: wait for its lock as the CLI's --wait does (5 s by default), instead of failing.
  let s: Store | undefined
  for (const deadline = Date.now() + 15_000; s === undefined;) {
    try {
      s = (await openStore(dir, { checkpointIntervalMs: 0 })).store
    } catch (err) {
      if ((err as { code?: string }).code !== 'STORE_LOCKED' || Date.now() > deadline) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  try {
    return await fn(s)
  } finally {
    await s.close()
  }
}

async function criteriaJson (store: string, name: string): Promise<any> {
  return JSON.parse(await must(process.execPath, CLI, 'criteria', 'show', store, name, '--json'))
}

async function waitForRun (t: Test, store: string, name: string, snapshot: string): Promise<any> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const c = await criteriaJson(store, name)
    if (c.lastRun?.snapshot === snapshot) return c
    if (c.lastError?.snapshot === snapshot) throw new Error(`the background copy failed: ${c.lastError.message}`)
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  t.fail(`the background copy of ${snapshot} did not finish in 30 s`)
}

function oneLine (t: Test, r: { code: number, stderr: string }, pattern: RegExp, what: string): void {
  t.equal(r.code, 1, `${what}: exit 1`)
  t.match(r.stderr, /^logdisk: [^\n]+\n$/, `${what}: one line`)
  t.match(r.stderr, pattern, what)
}

t.test('criteria create, show, list, delete: validated data in criteria.json', async t => {
  const dir = tmpDir('crit')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  await must(process.execPath, CLI, 'create', store, '--size', '16M')
  const made = await logdisk('criteria', 'create', store, 'nightly', '--target', path.join(dir, '{name}-{time}.img'), '--start-block', '16', '--end-block', '1039')
  t.equal(made.code, 0, made.stderr)
  t.match(made.stdout, /created criteria nightly: blocks 16-1039, full, target /)
  t.equal((await logdisk('criteria', 'create', store, 'inc', '--target', path.join(dir, 'inc-{snapshot}.img'), '--partial', '--background')).code, 0)
  const list = JSON.parse(await must(process.execPath, CLI, 'criteria', 'list', store, '--json'))
  t.same(list.map((c: any) => [c.name, c.startBlock, c.endBlock, c.mode, c.background, c.runs, c.lastRun]),
    [['inc', 0, null, 'partial', true, 0, null], ['nightly', 16, 1039, 'full', false, 0, null]], 'list --json')
  const stored = JSON.parse(fs.readFileSync(path.join(store, 'criteria.json'), 'utf8'))
  t.equal(stored.format, 1, 'criteria.json has a format version')
  t.same(stored.criteria.map((c: any) => c.name), ['inc', 'nightly'])
  const show = await logdisk('criteria', 'show', store, 'nightly')
  t.match(show.stdout, /^name +nightly\nblocks +16-1039\nmode +full\nbackground +false\ntarget +.*\{name\}-\{time\}\.img\n/, 'show prints the fields')
  const table = await logdisk('criteria', 'list', store)
  t.equal(table.stdout.trim().split('\n').length, 3, 'list prints a header and one line each')

  const target = path.join(dir, 'x-{snapshot}.img')
  oneLine(t, await logdisk('criteria', 'create', store, 'nightly', '--target', target), /already exists/, 'a duplicate name')
  oneLine(t, await logdisk('criteria', 'create', store, 'bad/name', '--target', target), /criteria name "bad\/name" must be/, 'a bad name')
  oneLine(t, await logdisk('criteria', 'create', store, 'r', '--target', target, '--start-block', '10', '--end-block', '5'), /--end-block 5 must be from the start block 10/, 'end before start')
  oneLine(t, await logdisk('criteria', 'create', store, 'r', '--target', target, '--end-block', '4096'), /to the volume's last block 4095/, 'end past the volume')
  oneLine(t, await logdisk('criteria', 'create', store, 'r', '--target', target, '--start-block', 'x'), /must be a block number/, 'a start that is not a number')
  oneLine(t, await logdisk('criteria', 'create', store, 'r', '--target', path.join(dir, '{host}.img')), /unknown placeholder \{host\}/, 'an unknown placeholder')
  oneLine(t, await logdisk('criteria', 'create', store, 'r', '--target', '/nonexistent-dir/{name}.img'), /does not exist/, 'a target directory that does not exist')
  oneLine(t, await logdisk('criteria', 'show', store, 'nope'), /no snapshot criteria named "nope"/, 'show of a missing criteria')
  oneLine(t, await logdisk('snapshot', store, '--criteria', 'nope'), /no snapshot criteria named "nope"/, 'snapshot by a missing criteria')
  t.same(JSON.parse(fs.readFileSync(path.join(store, 'criteria.json'), 'utf8')), stored, 'refused commands changed nothing')

  t.equal((await logdisk('criteria', 'delete', store, 'inc')).code, 0)
  oneLine(t, await logdisk('criteria', 'delete', store, 'inc'), /no snapshot criteria named "inc"/, 'deleting twice')
  t.same(JSON.parse(await must(process.execPath, CLI, 'criteria', 'list', store, '--json')).map((c: any) => c.name), ['nightly'])
  fs.writeFileSync(path.join(store, 'criteria.json'), '{oops')
  oneLine(t, await logdisk('criteria', 'list', store), /criteria\.json is not valid JSON/, 'a damaged criteria.json')
})

t.test('snapshot --criteria: full copies the block range; partial copies only blocks changed since its previous run', async t => {
  const dir = tmpDir('critrun')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const store = path.join(dir, 'store')
  await Store.create(store, { sizeBytes: SIZE, blockBytes: B, segmentBytes: 2 << 20 })
  await withStore(store, async s => {
    await s.write(0, crypto.randomBytes(40 * B))
    await s.write(2000 * B, crypto.randomBytes(300 * B))
  })
  await must(process.execPath, CLI, 'criteria', 'create', store, 'range', '--target', path.join(dir, '{name}-{snapshot}.img'), '--start-block', '16', '--end-block', '2099')
  await must(process.execPath, CLI, 'criteria', 'create', store, 'inc', '--target', path.join(dir, 'inc-{seq}.img'), '--partial')

  // Full, over a block range.
  const full = await logdisk('snapshot', store, '--criteria', 'range', '--json')
  t.equal(full.code, 0, full.stderr)
  const fr = JSON.parse(full.stdout)
  t.equal(fr.snapshot.name, 'range-1', 'the snapshot is named <criteria>-<run>')
  t.equal(fr.copy.out, path.join(dir, 'range-range-1.img'), 'the target pattern is expanded')
  const rangeImg = fs.readFileSync(fr.copy.out)
  const expectRange = await withStore(store, s => s.readSnapshot('range-1', 16 * B, (2099 - 16 + 1) * B))
  t.equal(rangeImg.length, (2099 - 16 + 1) * B, 'the copy covers blocks 16-2099')
  t.ok(rangeImg.equals(expectRange), 'and holds the snapshot\'s bytes of that range')

  // Partial, first run: everything written so far.
  const p1 = JSON.parse(await must(process.execPath, CLI, 'snapshot', store, '--criteria', 'inc', '--json'))
  const side1 = JSON.parse(fs.readFileSync(`${p1.copy.out}.json`, 'utf8')) as Sidecar
  t.same([side1.kind, side1.base, side1.ranges], ['logdisk-partial-copy', null, [[0, 40], [2000, 300]]], 'the first partial run copies every written block')

  // Changes, then the second partial run: only them.
  await withStore(store, async s => {
    await s.write(5 * B, crypto.randomBytes(3 * B))
    await s.write(2100 * B + 7, crypto.randomBytes(B)) // blocks 2100-2101, unaligned
    await s.write(3000 * B, Buffer.alloc(2 * B)) // zeros are a change too
    await s.write(7 * B, crypto.randomBytes(B)) // adjacent to 5-7: merged
  })
  const p2 = JSON.parse(await must(process.execPath, CLI, 'snapshot', store, '--criteria', 'inc', '--json'))
  const side2 = JSON.parse(fs.readFileSync(`${p2.copy.out}.json`, 'utf8')) as Sidecar
  t.same(side2.ranges, [[5, 3], [2100, 2], [3000, 2]], 'the second run lists exactly the changed blocks')
  t.same(side2.base, { snapshot: p1.snapshot.name, seq: p1.snapshot.seq }, 'since the previous run')
  const diff = JSON.parse(await must(process.execPath, CLI, 'diff', store, p1.snapshot.name, p2.snapshot.name, '--json'))
  t.same(diff.ranges.map((r: any) => [r.start, r.count]), side2.ranges, 'the same ranges as diff')
  const part = fs.readFileSync(p2.copy.out)
  const snapImg = await withStore(store, s => s.readSnapshot(p2.snapshot.name, 0, SIZE))
  t.equal(part.length, SIZE)
  const inRange = (b: number): boolean => side2.ranges.some(([s, n]) => b >= s && b < s + n)
  let wrong = 0
  for (let b = 0; b < SIZE / B; b++) {
    const got = part.subarray(b * B, (b + 1) * B)
    const want = inRange(b) ? snapImg.subarray(b * B, (b + 1) * B) : Buffer.alloc(B)
    if (!got.equals(want)) wrong++
  }
  t.equal(wrong, 0, 'changed blocks hold the snapshot\'s data; every other block is a zero hole')
  t.ok(fs.statSync(p2.copy.out).blocks * 512 <= 64 * B, 'the partial image is sparse')
  // The documented use: overlaying a partial copy's ranges onto the previous copy gives the new image.
  const rebuilt = fs.readFileSync(p1.copy.out)
  for (const [s, n] of side2.ranges) part.copy(rebuilt, s * B, s * B, (s + n) * B)
  t.ok(rebuilt.equals(snapImg), 'previous copy + partial ranges = the new snapshot image')

  // A failed copy is recorded and does not move the base: the next run covers both changes.
  await withStore(store, s => s.write(9 * B, crypto.randomBytes(B)))
  const failed = await run(process.execPath, [CLI, 'snapshot', store, '--criteria', 'inc'], { env: { LOGDISK_FAULTS: 'criteria-copy' } })
  oneLine(t, failed, /injected fault: the copy failed midway/, 'a failed copy')
  const c = await criteriaJson(store, 'inc')
  t.equal(c.lastRun.snapshot, p2.snapshot.name, 'the last run is still the previous one')
  t.match(c.lastError, { snapshot: 'inc-3', message: /injected fault/ }, 'the failure is recorded')
  await withStore(store, s => s.write(11 * B, crypto.randomBytes(B)))
  const p4 = JSON.parse(await must(process.execPath, CLI, 'snapshot', store, '--criteria', 'inc', '--json'))
  t.equal(p4.snapshot.name, 'inc-4')
  const side4 = JSON.parse(fs.readFileSync(`${p4.copy.out}.json`, 'utf8')) as Sidecar
  t.same(side4.ranges, [[9, 1], [11, 1]], 'the run after a failure copies the changes since the last completed run')
  t.equal((await criteriaJson(store, 'inc')).lastError, null, 'and clears the error')
  const copied = await logdisk('criteria', 'copy', store, 'range', 'inc-3')
  t.equal(copied.code, 0, `criteria copy re-runs a copy for an existing snapshot: ${copied.stderr}`)
  t.ok(fs.existsSync(path.join(dir, 'range-inc-3.img')))
})

t.test('background copies: after the command returns, by a detached process (unmounted) or the daemon (mounted); freeze', { skip: canMount() }, async t => {
  const dir = tmpDir('critbg')
  t.teardown(() => cleanup(dir, t))
  const store = path.join(dir, 'store')
  const mnt = path.join(dir, 'mnt')
  const fsDir = path.join(dir, 'fs')
  const out = path.join(dir, 'out')
  fs.mkdirSync(fsDir)
  fs.mkdirSync(out)
  await must(process.execPath, CLI, 'create', store, '--size', '64M')
  await must(process.execPath, CLI, 'criteria', 'create', store, 'bg', '--target', path.join(out, '{snapshot}.img'), '--background')

  // Unmounted: the command returns, then a detached `logdisk criteria copy` makes the copy.
  await withStore(store, s => s.write(0, crypto.randomBytes(64 * B)))
  const r1 = await logdisk('snapshot', store, '--criteria', 'bg')
  t.equal(r1.code, 0, r1.stderr)
  t.match(r1.stdout, /copying to .*bg-1\.img in the background/)
  await waitForRun(t, store, 'bg', 'bg-1')
  const want1 = await withStore(store, s => s.readSnapshot('bg-1', 0, 64 << 20))
  t.ok(fs.readFileSync(path.join(out, 'bg-1.img')).equals(want1), 'the background copy holds bg-1')

  // Mounted, with ext4 on current.img: a frozen cut, a foreground copy, then a background one.
  t.equal((await logdisk('mount', store, mnt)).code, 0)
  await must('mkfs.ext4', '-q', '-F', path.join(mnt, 'current.img'))
  await must('mount', '-o', 'loop', path.join(mnt, 'current.img'), fsDir)
  fs.writeFileSync(path.join(fsDir, 'hello'), crypto.randomBytes(3 << 20))
  await must(process.execPath, CLI, 'criteria', 'create', store, 'frozen', '--target', path.join(out, 'frozen-{snapshot}.img'), '--freeze', fsDir)
  const r2 = JSON.parse(await must(process.execPath, CLI, 'snapshot', store, '--criteria', 'frozen', '--json'))
  t.equal(r2.snapshot.frozen, true, 'the criteria\'s --freeze made the cut application-consistent')
  const fsck = await run('e2fsck', ['-fn', r2.copy.out])
  t.equal(fsck.code, 0, 'the copy of the frozen cut passes e2fsck -fn')
  const touch = await run('bash', ['-c', `echo x > ${fsDir}/after && sync -f ${fsDir}/after`], { timeoutMs: 10_000 })
  t.equal(touch.code, 0, 'the filesystem was thawed')

  fs.writeFileSync(path.join(fsDir, 'more'), crypto.randomBytes(2 << 20))
  const r3 = await logdisk('snapshot', store, '--criteria', 'bg', '--freeze', fsDir)
  t.equal(r3.code, 0, r3.stderr)
  await waitForRun(t, store, 'bg', 'bg-2')
  await new Promise(resolve => setTimeout(resolve, 1100)) // the kernel's 1 s entry cache
  const img = fs.readFileSync(path.join(mnt, 'bg-2.img'))
  t.ok(fs.readFileSync(path.join(out, 'bg-2.img')).equals(img), 'the copy made through the daemon equals bg-2.img')
  const log = fs.readFileSync(path.join(store, 'criteria.log'), 'utf8')
  t.match(log, /copied snapshot bg-2 by criteria bg/, 'the background process logged its result')
  await must('umount', fsDir)
  t.equal((await logdisk('unmount', mnt)).code, 0)
})
