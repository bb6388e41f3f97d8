// Store identity (issue 10 item 1): a moved store works, a copied store is refused for writes
// until adopted, nothing ever writes into, moves out of or deletes from another store's
// volume or segment, and adopt gives a copy its own identity (segment headers, baseline, pool
// volumes, archived objects). CLI and library, no mounts.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { CLI, logdisk, must, run, tmpDir } from './helpers/cli'
import { checksumTree, diffTrees } from './helpers/tree'
import { openStore } from '../src/app/open'
import { applyAssignments, readPolicy, writePolicy } from '../src/policy/policy'
import { ADOPT_FILE } from '../src/store/identity'
import { crc32c } from '../src/store/crc'

const MiB = 1024 * 1024
t.setTimeout(900_000) // a loaded machine runs each CLI start slowly; each run has its own bound

function pattern (seed: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  let x = seed * 2654435761 >>> 0
  for (let i = 0; i < bytes; i += 4) { x = (x * 1664525 + 1013904223) >>> 0; out.writeUInt32LE(x, i) }
  return out
}

/** Writes `data` at `offset` through the library, then snapshots it as `snap`. */
async function writeStore (dir: string, offset: number, data: Buffer, snap?: string): Promise<void> {
  const { store } = await openStore(dir)
  try {
    for (let at = 0; at < data.length; at += 128 * 1024) await store.write(offset + at, data.subarray(at, at + 128 * 1024))
    await store.flush()
    if (snap) await store.snapshot({ name: snap })
  } finally {
    await store.close()
  }
}

/** The image at the newest point, read back through `restore` (a read-only command). */
async function readBack (t: Test, dir: string, offset: number, bytes: number): Promise<Buffer> {
  const status = JSON.parse((await logdisk('status', dir, '--json')).stdout)
  const out = path.join(path.dirname(dir), `${path.basename(dir)}-${crypto.randomBytes(4).toString('hex')}.img`)
  const r = await logdisk('restore', dir, '--at', String(status.index.seq), '--out', out)
  t.equal(r.code, 0, `restore of ${dir}: ${r.stderr}`)
  const buf = Buffer.alloc(bytes)
  const fd = fs.openSync(out, 'r')
  fs.readSync(fd, buf, 0, bytes, offset)
  fs.closeSync(fd)
  fs.rmSync(out)
  return buf
}

function oneLine (t: Test, stderr: string, what: string): void {
  t.equal(stderr.trim().split('\n').length, 1, `${what}: one line on stderr`)
  t.notMatch(stderr, /internal error|\n\s+at /, `${what}: no internal error or stack`)
}

function uuidOf (dir: string): string {
  return JSON.parse(fs.readFileSync(path.join(dir, 'store.json'), 'utf8')).uuid
}

t.test('a moved store works where it is now, also with an old absolute pool.json', async t => {
  const dir = tmpDir('id-move')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'M1')
  await must(process.execPath, CLI, 'create', a, '--size', '32M')
  const data = pattern(1, 3 * MiB)
  await writeStore(a, 4096, data, 's1')
  // What stores made before this change recorded: the internal volume by absolute path.
  fs.writeFileSync(path.join(a, 'pool.json'), JSON.stringify({ volumes: [{ dir: path.join(a, 'segments'), internal: true }] }))
  const m2 = path.join(dir, 'M2')
  fs.renameSync(a, m2)
  const st = await logdisk('status', m2)
  t.equal(st.code, 0, `status after mv: ${st.stderr}`)
  t.equal(st.stderr, '', 'no warning: a moved store is itself')
  t.ok((await readBack(t, m2, 4096, data.length)).equals(data), 'the data reads back')
  const snap = await logdisk('snapshot', m2, '--name', 's2')
  t.equal(snap.code, 0, `a write command works: ${snap.stderr}`)
  t.equal(JSON.parse(fs.readFileSync(path.join(m2, 'identity.json'), 'utf8')).path, fs.realpathSync(m2), 'identity.json follows the store')
  const pool = JSON.parse(fs.readFileSync(path.join(m2, 'pool.json'), 'utf8'))
  t.equal(pool.volumes.find((v: { internal?: boolean }) => v.internal).dir, 'segments', 'pool.json now records the internal volume relative to the store')
  t.equal((await logdisk('verify', m2)).code, 0, 'verify is clean')
})

t.test('a copy is refused for writes in one line and reads its own data; nothing of either store changes', async t => {
  const dir = tmpDir('id-copy')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const b = path.join(dir, 'B')
  await must(process.execPath, CLI, 'create', a, '--size', '32M')
  const data = pattern(2, 2 * MiB)
  await writeStore(a, 0, data, 's1')
  await must('cp', '-a', a, b)
  const before = { a: checksumTree(a), b: checksumTree(b) }
  for (const args of [['snapshot', b], ['sync', b], ['compact', b], ['delete', b, 's1'], ['policy', 'set', b, 'mirror=1'], ['mount', b, path.join(dir, 'mnt')]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]} on a copy is refused`)
    oneLine(t, r.stderr, args[0])
    t.match(r.stderr, new RegExp(`^logdisk: ${b} is a copy of the store at ${a} .*logdisk adopt ${b}`), `${args[0]}: says it is a copy and what to do`)
  }
  for (const args of [['status', b], ['snapshots', b], ['log', b], ['verify', b]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 0, `${args[0]} on a copy works`)
    t.match(r.stderr, /^logdisk: warning: .* is a copy of the store at/, `${args[0]}: one warning line`)
    oneLine(t, r.stderr, args[0])
  }
  t.ok((await readBack(t, b, 0, data.length)).equals(data), 'the copy reads its data')
  t.same(diffTrees(before.a, checksumTree(a)), [], 'the original is byte-identical')
  t.same(diffTrees(before.b, checksumTree(b)), [], 'the copy is byte-identical')
})

t.test('an edited store.json in a copy is refused and moves nothing (the issue\'s 42 segments)', async t => {
  const dir = tmpDir('id-edit')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const b = path.join(dir, 'B')
  await must(process.execPath, CLI, 'create', a, '--size', '64M', '--segment-size', '2M')
  const data = pattern(3, 9 * MiB)
  await writeStore(a, 0, data)
  await must('cp', '-a', a, b)
  const cfg = JSON.parse(fs.readFileSync(path.join(b, 'store.json'), 'utf8'))
  const original = cfg.uuid
  cfg.uuid = crypto.randomUUID()
  fs.writeFileSync(path.join(b, 'store.json'), JSON.stringify(cfg, null, 2))
  const before = { a: checksumTree(a), b: checksumTree(b) }
  for (const args of [['status', b], ['verify', b], ['snapshot', b]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]}: refused`)
    oneLine(t, r.stderr, args[0])
    t.match(r.stderr, new RegExp(`store.json was edited or copied in; put back "uuid": "${original}"`), `${args[0]}: names the uuid to put back`)
  }
  // Without identity.json the segment headers still tell: recovery refuses instead of moving them aside.
  fs.rmSync(path.join(b, 'identity.json'))
  const before2 = checksumTree(b)
  for (const args of [['status', b], ['snapshot', b]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]} without identity.json: refused`)
    oneLine(t, r.stderr, args[0])
    t.match(r.stderr, new RegExp(`refusing to touch .*seg-\\d+\\.log: its intact header says it belongs to store ${original}`), `${args[0]}: the header's store is named`)
  }
  t.notOk(fs.existsSync(path.join(b, 'lost+found')), 'nothing went to lost+found')
  t.same(diffTrees(before.a, checksumTree(a)), [], 'the original is byte-identical')
  t.same(diffTrees(before2, checksumTree(b)), [], 'the copy is byte-identical')
  t.ok((await readBack(t, a, 0, data.length)).equals(data), 'the original still reads its data')
  t.equal((await logdisk('verify', a)).code, 0, 'and verifies')
})

t.test('adopt gives a copy its own identity; both are then used side by side', async t => {
  const dir = tmpDir('id-adopt')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const b = path.join(dir, 'B')
  await must(process.execPath, CLI, 'create', a, '--size', '64M', '--segment-size', '2M')
  const data = pattern(4, 5 * MiB)
  await writeStore(a, 0, data, 's1')
  await must('cp', '-a', a, b)
  const aBefore = checksumTree(a)
  const r = await logdisk('adopt', b)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`adopted ${b} \\(a copy of ${a}\\): identity ${uuidOf(a)} -> ${uuidOf(b)}; [1-9]\\d* segment header\\(s\\) rewritten`))
  t.not(uuidOf(a), uuidOf(b), 'a new uuid')
  t.same(diffTrees(aBefore, checksumTree(a)), [], 'the original is byte-identical')
  for (const name of fs.readdirSync(path.join(b, 'segments'))) {
    const h = Buffer.alloc(68)
    const fd = fs.openSync(path.join(b, 'segments', name), 'r')
    fs.readSync(fd, h, 0, 68, 0)
    fs.closeSync(fd)
    t.equal(h.subarray(48, 64).toString('hex'), uuidOf(b).replace(/-/g, ''), `${name}: the header names the new uuid`)
    t.equal(h.readUInt32LE(64), crc32c(h.subarray(0, 64)), `${name}: header checksum valid`)
  }
  const moreA = pattern(5, MiB)
  const moreB = pattern(6, MiB)
  await writeStore(a, 8 * MiB, moreA, 's2')
  await writeStore(b, 8 * MiB, moreB, 's2')
  t.ok((await readBack(t, a, 8 * MiB, MiB)).equals(moreA), 'the original reads its own new data')
  t.ok((await readBack(t, b, 8 * MiB, MiB)).equals(moreB), 'the adopted copy reads its own new data')
  t.ok((await readBack(t, b, 0, data.length)).equals(data), 'and the data it was copied with')
  for (const s of [a, b]) {
    const v = await logdisk('verify', s)
    t.equal(v.code, 0, `verify ${path.basename(s)}: ${v.stdout.trim().split('\n').pop()}`)
  }
})

t.test('a copy of a store with a pool volume never writes to the original\'s volume; adopt takes its segments home', async t => {
  const dir = tmpDir('id-pool')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const vol = path.join(dir, 'vol')
  await must(process.execPath, CLI, 'create', a, '--size', '64M', '--segment-size', '2M', '--pool', vol)
  t.equal((await logdisk('pool', 'add', a, vol)).code, 0, 'the volume is assigned to A')
  const data = pattern(7, 5 * MiB)
  await writeStore(a, 0, data, 's1')
  const uuid = uuidOf(a)
  t.ok(fs.readdirSync(path.join(vol, uuid)).some(n => n.startsWith('seg-')), 'A keeps segments on the volume')
  t.ok(fs.existsSync(path.join(vol, uuid, '.logdisk-owner.json')), 'with an owner record')

  // Moved and copied before either was opened: the store-level record cannot tell them apart.
  const a2 = path.join(dir, 'A2')
  const a3 = path.join(dir, 'A3')
  fs.renameSync(a, a2)
  await must('cp', '-a', a2, a3)
  const volBefore = checksumTree(vol)
  const first = await logdisk('snapshot', a3, '--name', 'x3')
  t.equal(first.code, 0, `the first one to write claims the volume: ${first.stderr}`)
  const volAfterA3 = checksumTree(vol)
  const a2Before = checksumTree(a2)
  const second = await logdisk('snapshot', a2, '--name', 'x2')
  t.equal(second.code, 1, 'the other one is refused')
  oneLine(t, second.stderr, 'snapshot on the other one')
  t.match(second.stderr, new RegExp(`pool volume ${vol} holds the segments of the store at ${a3}, which has this store's identity`), 'naming the volume and the other store')
  t.same(diffTrees(volAfterA3, checksumTree(vol)), [], 'the refused store wrote nothing to the volume')
  t.same(diffTrees(a2Before, checksumTree(a2)), [], 'nor to itself')
  t.ok(diffTrees(volBefore, volAfterA3).length > 0, '(the claiming store did write there)')

  // Adopt A2: its segments on A3's volume come home; the volume is only read.
  const volBeforeAdopt = checksumTree(vol)
  const adopt = await logdisk('adopt', a2)
  t.equal(adopt.code, 0, adopt.stderr)
  t.same(diffTrees(volBeforeAdopt, checksumTree(vol)), [], 'adopt did not touch the volume')
  t.ok((await readBack(t, a2, 0, data.length)).equals(data), 'the adopted store reads its data from its own segments')
  const names = (await logdisk('snapshots', a2)).stdout
  t.match(names, /s1/, 'with its snapshot')
  t.notMatch(names, /x3/, 'and not the one A3 appended to the segment they shared (adopt copied A2\'s log up to its clean close)')
  t.equal((await logdisk('verify', a2)).code, 0, 'and verifies')
  t.ok((await readBack(t, a3, 0, data.length)).equals(data), 'the other one still reads its data')
  t.equal((await logdisk('verify', a3)).code, 0, 'and verifies')
})

t.test('adopt copies archived segments under the new identity; an interrupted adopt is finished by running it again', async t => {
  const dir = tmpDir('id-archive')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const b = path.join(dir, 'B')
  const target = path.join(dir, 'archive')
  fs.mkdirSync(target)
  await must(process.execPath, CLI, 'create', a, '--size', '64M', '--segment-size', '2M')
  const data = pattern(8, 7 * MiB)
  await writeStore(a, 0, data, 's1')
  writePolicy(a, applyAssignments(readPolicy(a), [`archive.target=${target}`, 'segments.workingSet=1', 'compact.every=0']))
  const ar = await logdisk('archive', a)
  t.equal(ar.code, 0, ar.stderr)
  const archivedA = fs.readdirSync(target).filter(n => n.startsWith(uuidOf(a)) && n.endsWith('.ldarch'))
  t.ok(archivedA.length >= 2, `A archived ${archivedA.length} segments`)
  await must('cp', '-a', a, b)
  const targetBefore = checksumTree(target)
  const aBefore = checksumTree(a)

  // An adopt that stopped midway: the intent is written, one header already rewritten.
  const to = crypto.randomUUID()
  fs.writeFileSync(path.join(b, ADOPT_FILE), JSON.stringify({ from: uuidOf(b), to, copyOf: a, startedAt: new Date().toISOString() }))
  const seg = path.join(b, 'segments', fs.readdirSync(path.join(b, 'segments')).filter(n => n.startsWith('seg-')).sort().pop()!)
  const fd = fs.openSync(seg, 'r+')
  const h = Buffer.alloc(68)
  fs.readSync(fd, h, 0, 68, 0)
  Buffer.from(to.replace(/-/g, ''), 'hex').copy(h, 48)
  h.writeUInt32LE(crc32c(h.subarray(0, 64)), 64)
  fs.writeSync(fd, h, 0, 68, 0)
  fs.closeSync(fd)
  const refused = await logdisk('status', b)
  t.equal(refused.code, 1, 'a store with an interrupted adopt is refused')
  t.match(refused.stderr, new RegExp(`an adopt of ${b} was interrupted .*finish it with: logdisk adopt ${b}`))
  oneLine(t, refused.stderr, 'status during adopt')

  const r = await logdisk('adopt', b)
  t.equal(r.code, 0, r.stderr)
  t.equal(uuidOf(b), to, 'the adopt finished with the uuid it had started with')
  t.match(r.stdout, new RegExp(`${archivedA.length} archived segment\\(s\\) copied under the new identity`))
  const archivedB = fs.readdirSync(target).filter(n => n.startsWith(to) && n.endsWith('.ldarch'))
  t.equal(archivedB.length, archivedA.length, 'every archived segment exists under the new uuid')
  const after = checksumTree(target)
  for (const [name, sum] of targetBefore) t.equal(after.get(name), sum, `the original's object ${name} is unchanged`)
  t.same(diffTrees(aBefore, checksumTree(a)), [], 'the original store is byte-identical')
  t.ok((await readBack(t, b, 0, data.length)).equals(data), 'the adopted copy reads its archived data back')
  t.ok((await readBack(t, a, 0, data.length)).equals(data), 'so does the original')
  const runB = await run(process.execPath, [CLI, 'verify', b])
  t.equal(runB.code, 0, `verify of the adopted copy: ${runB.stdout.trim().split('\n').pop()} ${runB.stderr}`)
})

t.test('recovery never moves a segment whose header names another store', async t => {
  const dir = tmpDir('id-foreign')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const a = path.join(dir, 'A')
  const other = path.join(dir, 'O')
  await must(process.execPath, CLI, 'create', a, '--size', '32M', '--segment-size', '2M')
  await must(process.execPath, CLI, 'create', other, '--size', '32M', '--segment-size', '2M')
  await writeStore(a, 0, pattern(9, MiB))
  await writeStore(other, 0, pattern(10, 5 * MiB))
  const mine = fs.readdirSync(path.join(a, 'segments')).filter(n => n.startsWith('seg-')).sort()
  const theirs = fs.readdirSync(path.join(other, 'segments')).filter(n => n.startsWith('seg-')).sort()
  // A stray file of the other store lands where A's next segment would be.
  const next = `seg-${String(Number(mine[mine.length - 1].slice(4, 16)) + 1).padStart(12, '0')}.log`
  fs.copyFileSync(path.join(other, 'segments', theirs[theirs.length - 1]), path.join(a, 'segments', next))
  const before = checksumTree(a)
  const r = await logdisk('snapshot', a)
  t.equal(r.code, 1, 'refused')
  oneLine(t, r.stderr, 'snapshot')
  t.match(r.stderr, new RegExp(`refusing to touch .*${next}: its intact header says it belongs to store ${uuidOf(other)}`))
  t.same(diffTrees(before, checksumTree(a)), [], 'nothing moved, nothing written')
  fs.rmSync(path.join(a, 'segments', next))
  t.equal((await logdisk('verify', a)).code, 0, 'without the stray file the store opens and verifies')
})

t.test('a copy used while its original was away is the copy once the original is back; adopting it leaves the original whole', async t => {
  // helper-62: cp -a p1 p1c; mv p1 away; p1c mounted and written (taken for p1 moved: it claims
  // p1's pool directory); p1 back; "adopt <copy>" on p1c renamed the pool directory p1 read,
  // and p1 could not be opened again.
  const dir = tmpDir('id-copy-back')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const p1 = path.join(dir, 'p1')
  const p1c = path.join(dir, 'p1c')
  const vol = path.join(dir, 'vol')
  await must(process.execPath, CLI, 'create', p1, '--size', '64M', '--segment-size', '2M', '--pool', vol)
  t.equal((await logdisk('pool', 'add', p1, vol)).code, 0)
  const data = pattern(11, 5 * MiB)
  await writeStore(p1, 0, data, 's1')
  await must('cp', '-a', p1, p1c)
  fs.renameSync(p1, `${p1}.away`)
  const later = pattern(12, 6 * MiB)
  await writeStore(p1c, 10 * MiB, later) // taken for p1 moved: it writes, into the shared volume
  fs.renameSync(`${p1}.away`, p1)

  const copyNow = await logdisk('snapshot', p1c, '--name', 'x')
  t.equal(copyNow.code, 1, 'the one that moved is refused once the original is back')
  oneLine(t, copyNow.stderr, 'snapshot of the copy')
  t.match(copyNow.stderr, new RegExp(`${p1c} is a copy of the store at ${p1} `), 'as a copy of it')
  const original = await logdisk('snapshot', p1, '--name', 'y')
  t.equal(original.code, 1, 'the original is refused while the copy holds its volume')
  t.match(original.stderr, new RegExp(`holds the segments of the store at ${p1c}, which moved there from here .*logdisk adopt ${p1c} `), 'naming the copy to adopt')

  const adopt = await logdisk('adopt', p1c)
  t.equal(adopt.code, 0, `adopt of the copy: ${adopt.stderr}`)
  t.ok((await readBack(t, p1c, 0, data.length)).equals(data), 'the adopted copy reads the data it was copied with')
  t.ok((await readBack(t, p1c, 10 * MiB, later.length)).equals(later), 'and what it wrote')
  // What the copy appended to the segment files they shared is not the original's
  // (test/identity-copy-appended.test.ts): dropped on request, the original is as it was.
  const refused = await logdisk('snapshot', p1, '--name', 'z')
  t.equal(refused.code, 1, 'the original refuses the entries its copy wrote to their shared volume')
  t.match(refused.stderr, new RegExp(`${p1c} claimed since: another copy with this store's identity .* logdisk pool repair ${p1} --drop-copy-writes`), 'and says how to drop them')
  t.equal((await logdisk('pool', 'repair', p1, '--drop-copy-writes')).code, 0, 'dropped')
  const back = await logdisk('snapshot', p1, '--name', 'z')
  t.equal(back.code, 0, `the original works again: ${back.stderr}`)
  t.ok((await readBack(t, p1, 0, data.length)).equals(data), 'with its data')
  t.ok((await readBack(t, p1, 10 * MiB, later.length)).equals(Buffer.alloc(later.length)), 'and none of what the copy wrote')
  for (const s of [p1, p1c]) t.equal((await logdisk('verify', s)).code, 0, `verify ${path.basename(s)}`)
})
