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

/** A store p1 in a fresh directory whose segments are on pool volume vol (p1c: where a copy goes). */
async function pooledStore (t: Test, name: string): Promise<{ dir: string, p1: string, p1c: string, vol: string }> {
  const dir = tmpDir(name)
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const p1 = path.join(dir, 'p1')
  const vol = path.join(dir, 'vol')
  await must(process.execPath, CLI, 'create', p1, '--size', '64M', '--segment-size', '2M', '--pool', vol)
  t.equal((await logdisk('pool', 'add', p1, vol)).code, 0)
  return { dir, p1, p1c: path.join(dir, 'p1c'), vol }
}

t.test('the original does not take the entries its copy appended to their shared pool volume', async t => {
  const { dir, p1, p1c, vol } = await pooledStore(t, 'id-appended')
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

  // Read commands read the original as it was at its clean close (helper-69's D2: a copy read
  // while its original writes on is the same case); commands that write are refused, in one
  // line, and nothing changes.
  const p1Before = checksumTree(p1)
  const volBefore = checksumTree(vol)
  const head = `^(logdisk: )?${p1} was closed cleanly with its log ending at entry \\d+, but the log goes on \\(entry \\d+ at \\d+ of ${shared}/seg-\\d+\\.log\\) in a pool volume directory that ${p1c} claimed since: another copy with this store's identity \\(${uuid}\\) wrote there; nothing was changed\\. `
  t.ok((await readStore(p1, 0, 3 * MiB, 'read')).equals(mine), 'a read open reads the original\'s own bytes')
  t.ok((await readStore(p1, 20 * MiB, 3 * MiB, 'read')).equals(Buffer.alloc(3 * MiB)), 'and none of the copy\'s')
  const st = await logdisk('status', p1)
  t.equal(st.code, 0, `status works: ${st.stderr}`)
  const out = path.join(dir, 'out.img')
  const restored = await logdisk('restore', p1, '--at', new Date().toISOString(), '--out', out)
  t.equal(restored.code, 0, `restore works: ${restored.stderr}`)
  if (restored.code === 0) t.ok(fs.readFileSync(out).subarray(0, 3 * MiB).equals(mine), 'and restores the original as it was')
  fs.rmSync(out, { force: true })
  for (const args of [['snapshot', p1, '--name', 's'], ['sync', p1]]) {
    const r = await logdisk(...args)
    t.equal(r.code, 1, `${args[0]} is refused`)
    oneLine(t, r.stderr, args[0])
    // The pool's own check names the copy first (pool.ts ownerConflict), else recovery's line.
    t.match(r.stderr, new RegExp(`${p1c}.*adopt ${p1c}`), `${args[0]}: names the copy to adopt`)
  }
  t.same(diffTrees(p1Before, checksumTree(p1)), [], 'the original is byte-identical')
  t.same(diffTrees(volBefore, checksumTree(vol)), [], 'the shared volume is byte-identical')

  // The way out: the copy takes what it wrote home; the original drops it (kept in lost+found).
  t.equal((await logdisk('adopt', p1c)).code, 0, 'the copy is adopted')
  const snap = await logdisk('snapshot', p1, '--name', 's')
  t.equal(snap.code, 1, 'a write command on the original is still refused')
  oneLine(t, snap.stderr, 'snapshot')
  t.match(snap.stderr, new RegExp(head + `No store with this identity is at ${p1c} now`, 'm'), 'saying no store with this identity is there now')
  const repair = await logdisk('pool', 'repair', p1, '--drop-copy-writes', '--json')
  t.equal(repair.code, 0, `pool repair --drop-copy-writes: ${repair.stderr}`)
  t.match(repair.stderr, /dropped the entries another copy of this store wrote past its last clean close; their bytes were kept in lost\+found/, 'says what it dropped')
  const dropped = (JSON.parse(repair.stdout) as { dropped: { by: string, bytes: number, savedTo: string, segmentsSetAside: string[] } | null }).dropped
  t.equal(dropped?.by, p1c, '--json names the copy whose writes were dropped')
  t.ok(dropped !== null && fs.statSync(dropped.savedTo).size === dropped.bytes, `and where their bytes are kept (${JSON.stringify(dropped)})`)
  const keptBytes = dropped!.bytes + dropped!.segmentsSetAside.reduce((n, f) => n + fs.statSync(f).size, 0)
  t.ok(keptBytes >= 3 * MiB, `what it kept covers the 3 MiB the copy wrote (${keptBytes} bytes)`)
  t.ok(fs.readdirSync(path.join(p1, 'lost+found')).length > 0, 'the dropped entries are kept in lost+found')
  const again = await logdisk('pool', 'repair', p1, '--drop-copy-writes')
  t.equal(again.code, 0)
  t.match(again.stdout, /^dropped nothing: no copy of this store wrote past its last clean close$/m, 'a second run drops nothing and says so')
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
  const { dir, p1, vol } = await pooledStore(t, 'id-appended-crash')
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

// helper-69's D1 and D2. D1: a backup of the whole store restored under another name found
// its own later entries (written at its old path after the backup) in the pool directory
// its old path had claimed, and refused them as a copy's; the advised --drop-copy-writes
// then dropped acknowledged writes. D2: a copy read while its original wrote on was refused
// by read-only commands (which a copy is promised), and the line told it to adopt its original.
t.test('a backup restored under another name replays its own entries; a copy reads as it was copied', async t => {
  const { dir, p1 } = await pooledStore(t, 'id-appended-backup')
  const first = pattern(31, 3 * MiB)
  await writeStore(p1, 0, first)
  await must('cp', '-a', p1, path.join(dir, 'p1.bak'))
  const c = path.join(dir, 'c')
  await must('cp', '-a', p1, c) // a copy, read while its original writes on
  const later = pattern(32, MiB)
  const laterNew = pattern(33, 3 * MiB)
  await writeStore(p1, MiB, later)
  await writeStore(p1, 20 * MiB, laterNew)

  // D2: the copy reads as it was copied, with a warning that it is a copy.
  const st = await logdisk('status', c)
  t.equal(st.code, 0, `status of the copy works: ${st.stderr}`)
  t.notMatch(st.stderr, /adopt .*\/p1\b/, 'and never tells the copy to adopt its original')
  t.ok((await readStore(c, 0, 3 * MiB, 'read')).equals(first), 'the copy reads what it was copied with')
  t.ok((await readStore(c, 20 * MiB, 3 * MiB, 'read')).equals(Buffer.alloc(3 * MiB)), 'none of what the original wrote since')
  t.equal((await logdisk('verify', c)).code, 0, 'verify of the copy works')
  t.ok((await readStore(p1, 20 * MiB, 3 * MiB, 'read')).equals(laterNew), 'the original reads all it wrote')

  // D1: the store is lost; its backup is put back under another name.
  fs.rmSync(p1, { recursive: true, force: true })
  fs.rmSync(c, { recursive: true, force: true })
  const p2 = path.join(dir, 'p2')
  fs.renameSync(path.join(dir, 'p1.bak'), p2)
  const st2 = await logdisk('status', p2)
  t.equal(st2.code, 0, `status of the restored backup works: ${st2.stderr}`)
  const want = Buffer.concat([first.subarray(0, MiB), later, first.subarray(2 * MiB)])
  t.ok((await readStore(p2, 0, 3 * MiB, 'write')).equals(want), 'it replays the entries its old self wrote after the backup')
  t.ok((await readStore(p2, 20 * MiB, 3 * MiB, 'read')).equals(laterNew), 'all of them')
  t.equal((await logdisk('verify', p2)).code, 0, 'and verifies')
})

// helper-70's D3: an owner record written on another host (a pool on shared storage, the copy
// used there) turned the check off, and the copy's writes were taken for the store's own.
// W1: status called what the copy wrote "a torn tail ... left for the next command that writes
// to cut", while a command that writes refuses it.
t.test('a copy that wrote from another host is not taken for the store; status says what it read', async t => {
  const { dir, p1, p1c, vol } = await pooledStore(t, 'id-appended-host')
  const mine = pattern(41, 3 * MiB)
  await writeStore(p1, 0, mine)
  const uuid = JSON.parse(fs.readFileSync(path.join(p1, 'store.json'), 'utf8')).uuid
  await must('cp', '-a', p1, p1c)
  fs.renameSync(p1, `${p1}.away`)
  await writeStore(p1c, 30 * MiB, pattern(42, MiB))
  fs.renameSync(`${p1}.away`, p1)
  fs.rmSync(p1c, { recursive: true, force: true }) // used on the other host, as far as this one can tell
  const ownerFile = path.join(vol, uuid, '.logdisk-owner.json')
  const owner = JSON.parse(fs.readFileSync(ownerFile, 'utf8'))
  fs.writeFileSync(ownerFile, JSON.stringify({ ...owner, host: 'otherhost' }))

  t.ok((await readStore(p1, 30 * MiB, MiB, 'read')).equals(Buffer.alloc(MiB)), 'a read open does not show the copy\'s write')
  t.ok((await readStore(p1, 0, 3 * MiB, 'read')).equals(mine), 'and shows the store\'s own')
  const st = await logdisk('status', p1)
  t.equal(st.code, 0, `status works: ${st.stderr}`)
  t.match(st.stdout, new RegExp(`^recovery +read as it was at its last clean close: the log goes on from segment \\d+ with .* that otherhost:${p1c} wrote since`, 'm'), 'status says the store was read as at its clean close, and who wrote past it')
  t.notMatch(st.stdout, /torn tail/, 'not a torn tail')
  const snap = await logdisk('snapshot', p1, '--name', 's')
  t.equal(snap.code, 1, 'a command that writes is refused')
  t.match(snap.stderr, new RegExp(`otherhost:${p1c} claimed since: another copy with this store's identity`), 'naming the other host\'s directory')
})
