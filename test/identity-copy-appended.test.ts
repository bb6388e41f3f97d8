// Entries a copy of a store appended to the segment files the two share on pool volumes are
// not the original's (helper-62's sequence: cp -a p1 p1c; mv p1 away; p1c, taken for p1
// moved, writes into p1's pool directory; p1 back). The original was closed cleanly, so its
// log cannot go on past where it ended then: it refuses to open in one line, changing
// nothing, until the copy's entries are dropped on request; a crash's own unflushed tail
// still replays. Library and CLI, no mounts.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { CLI, logdisk, must, tmpDir } from './helpers/cli'
import { checksumTree, diffTrees } from './helpers/tree'
import { openStore } from '../src/app/open'
import { IndexDb } from '../src/store/index-db'

const MiB = 1024 * 1024
t.setTimeout(600_000)

function pattern (seed: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes)
  let x = seed * 2654435761 >>> 0
  for (let i = 0; i < bytes; i += 4) { x = (x * 1664525 + 1013904223) >>> 0; out.writeUInt32LE(x, i) }
  return out
}

async function writeStore (dir: string, offset: number, data: Buffer, close: 'close' | 'crash' = 'close'): Promise<void> {
  const { store } = await openStore(dir)
  try {
    for (let at = 0; at < data.length; at += 128 * 1024) await store.write(offset + at, data.subarray(at, at + 128 * 1024))
    await store.flush()
  } finally {
    if (close === 'close') await store.close()
    else await store.abandon()
  }
}

async function readStore (dir: string, offset: number, bytes: number, access: 'read' | 'write'): Promise<Buffer> {
  const { store } = await openStore(dir, {}, [], access)
  try {
    const out = Buffer.alloc(bytes)
    for (let at = 0; at < bytes; at += 128 * 1024) (await store.read(offset + at, Math.min(128 * 1024, bytes - at))).copy(out, at)
    return out
  } finally {
    await store.close()
  }
}

/** Whether the store's index records a clean close (read with the store closed). */
async function cleanClose (dir: string): Promise<boolean> {
  const index = await IndexDb.open(path.join(dir, 'index'))
  try {
    return (await index.cleanClose()) !== undefined
  } finally {
    await index.close()
  }
}

function oneLine (t: Test, stderr: string, what: string): void {
  t.equal(stderr.trim().split('\n').length, 1, `${what}: one line on stderr`)
  t.notMatch(stderr, /internal error|\n\s+at /, `${what}: no internal error or stack`)
}

t.test('the original does not take the entries its copy appended to their shared pool volume', async t => {
  const dir = tmpDir('id-appended')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const p1 = path.join(dir, 'p1')
  const p1c = path.join(dir, 'p1c')
  const vol = path.join(dir, 'vol')
  await must(process.execPath, CLI, 'create', p1, '--size', '64M', '--segment-size', '2M', '--pool', vol)
  t.equal((await logdisk('pool', 'add', p1, vol)).code, 0)
  const mine = pattern(21, 3 * MiB)
  await writeStore(p1, 0, mine)
  const uuid = JSON.parse(fs.readFileSync(path.join(p1, 'store.json'), 'utf8')).uuid
  const shared = path.join(vol, uuid)
  const before = new Set(fs.readdirSync(shared))
  await must('cp', '-a', p1, p1c)
  fs.renameSync(p1, `${p1}.away`)
  const theirs = pattern(22, MiB) // over blocks p1 wrote
  const theirsNew = pattern(23, 3 * MiB) // blocks p1 never wrote, into new segments
  await writeStore(p1c, MiB, theirs)
  await writeStore(p1c, 20 * MiB, theirsNew)
  fs.renameSync(`${p1}.away`, p1)
  t.ok(fs.readdirSync(shared).some(n => !before.has(n)), '(the copy made new segment files in the shared directory)')

  // Read commands and write commands alike are refused, in one line, and change nothing.
  const p1Before = checksumTree(p1)
  const volBefore = checksumTree(vol)
  const refusal = new RegExp(`^(logdisk: )?${p1} was closed cleanly with its log ending at entry \\d+, but the log goes on \\(entry \\d+ at \\d+ of ${shared}/seg-\\d+\\.log\\) in a pool volume directory that the store at ${p1c} claimed since: another copy with this store's identity \\(${uuid}\\) wrote there; nothing was changed\\. Give that copy its own identity first \\(logdisk adopt ${p1c}: it keeps what it wrote\\), then drop its writes from this store with: logdisk pool repair ${p1} --drop-copy-writes \\(they go to lost\\+found\\)$`, 'm')
  await t.rejects(readStore(p1, 0, 3 * MiB, 'read'), { code: 'IDENTITY', message: refusal }, 'a read open of the library is refused')
  for (const args of [['status', p1], ['verify', p1], ['restore', p1, '--at', '1', '--out', path.join(dir, 'out.img')]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]} is refused`)
    t.match(r.stderr, refusal, `${args[0]}: names the cause and the way out`)
  }
  t.notOk(fs.existsSync(path.join(dir, 'out.img')), 'restore wrote no image')
  t.same(diffTrees(p1Before, checksumTree(p1)), [], 'the original is byte-identical')
  t.same(diffTrees(volBefore, checksumTree(vol)), [], 'the shared volume is byte-identical')

  // The way out: the copy takes what it wrote home; the original drops it (kept in lost+found).
  t.equal((await logdisk('adopt', p1c)).code, 0, 'the copy is adopted')
  const snap = await logdisk('snapshot', p1, '--name', 's')
  t.equal(snap.code, 1, 'a write command on the original is still refused')
  oneLine(t, snap.stderr, 'snapshot')
  t.match(snap.stderr, refusal, 'with the same line')
  const repair = await logdisk('pool', 'repair', p1, '--drop-copy-writes')
  t.equal(repair.code, 0, `pool repair --drop-copy-writes: ${repair.stderr}`)
  t.match(repair.stderr, /dropped the entries another copy of this store wrote past its last clean close; their bytes were kept in lost\+found/, 'says what it dropped')
  t.ok(fs.readdirSync(path.join(p1, 'lost+found')).length > 0, 'the dropped entries are kept in lost+found')
  t.ok((await readStore(p1, 0, 3 * MiB, 'write')).equals(mine), 'the original reads exactly its own bytes')
  t.ok((await readStore(p1, 20 * MiB, 3 * MiB, 'read')).equals(Buffer.alloc(3 * MiB)), 'and nothing where only the copy wrote')
  const v = await logdisk('verify', p1)
  t.equal(v.code, 0, `the original verifies: ${v.stderr}`)
  t.ok((await readStore(p1c, MiB, MiB, 'read')).equals(theirs), 'the adopted copy reads what it wrote')
  t.ok((await readStore(p1c, 20 * MiB, 3 * MiB, 'read')).equals(theirsNew), 'all of it')
  t.ok((await readStore(p1c, 0, MiB, 'read')).equals(mine.subarray(0, MiB)), 'and the data it was copied with')
  t.equal((await logdisk('verify', p1c)).code, 0, 'the copy verifies')
})

t.test('after a crash the store replays its own unflushed tail; a clean close followed by more use of itself is not refused', async t => {
  const dir = tmpDir('id-appended-crash')
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const p1 = path.join(dir, 'p1')
  const vol = path.join(dir, 'vol')
  await must(process.execPath, CLI, 'create', p1, '--size', '64M', '--segment-size', '2M', '--pool', vol)
  t.equal((await logdisk('pool', 'add', p1, vol)).code, 0)
  const a = pattern(31, 3 * MiB)
  const b = pattern(32, MiB)
  const c = pattern(33, 3 * MiB)
  await writeStore(p1, 0, a) // closed cleanly
  t.ok(await cleanClose(p1), 'a clean close is recorded in the index')
  await writeStore(p1, MiB, b, 'crash') // opened again, written, not closed
  t.notOk(await cleanClose(p1), 'an open that writes removed the record before it appended')
  t.ok((await readStore(p1, 0, 3 * MiB, 'read')).subarray(MiB, 2 * MiB).equals(b), 'a read open replays the tail the crash left')
  await writeStore(p1, 10 * MiB, c, 'crash') // and once more, crashed again
  const now = await readStore(p1, 0, 3 * MiB, 'write')
  t.ok(now.subarray(0, MiB).equals(a.subarray(0, MiB)) && now.subarray(MiB, 2 * MiB).equals(b) && now.subarray(2 * MiB).equals(a.subarray(2 * MiB)), 'a write open too')
  t.ok((await readStore(p1, 10 * MiB, 3 * MiB, 'write')).equals(c), 'with all of it')
  t.equal((await logdisk('verify', p1)).code, 0, 'and verifies')
  t.ok(await cleanClose(p1), 'closed cleanly again, it is recorded again')
})
