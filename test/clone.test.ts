// Writable clones (issue 14 item 4): `clone` makes a store whose unwritten blocks read from a
// snapshot of its parent, in O(1) (nothing copied); writes go to the clone; the parent refuses
// to delete the snapshot while the clone reads it, naming the clone; `promote` copies in what
// the clone still reads from its parent, after which the parent may go. CLI for the commands,
// the library for reading images.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { CLI, run, tmpDir } from './helpers/cli'

t.setTimeout(300_000)

const MiB = 1024 * 1024
const SIZE = 32 * MiB

function pattern (seed: number, bytes: number): Buffer {
  const key = crypto.createHash('sha256').update(`clone ${seed}`).digest()
  return crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes))
}

const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })
async function ok (...args: string[]): Promise<string> {
  const r = await cli(...args)
  if (r.code !== 0) throw new Error(`logdisk ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

/** The whole image (current, or a snapshot) read through the library. */
async function image (dir: string, snapshot?: string): Promise<Buffer> {
  const { store } = await openStore(dir)
  try {
    return snapshot === undefined ? await store.read(0, store.sizeBytes) : await store.readSnapshot(snapshot, 0, store.sizeBytes)
  } finally {
    await store.close()
  }
}

async function write (dir: string, offset: number, data: Buffer, snapshot?: string): Promise<void> {
  const { store } = await openStore(dir)
  try {
    await store.write(offset, data)
    if (snapshot) await store.snapshot({ name: snapshot })
  } finally {
    await store.close()
  }
}

t.test('clone, write, protect, promote', { skip: fs.existsSync(CLI) ? false : 'run make build first' }, async t => {
  const root = tmpDir('clone')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const parent = path.join(root, 'parent')
  const clone = path.join(root, 'clone')
  await ok('create', parent, '--size', '32M', '--segment-size', '2M')
  await write(parent, 0, pattern(1, 20 * MiB), 'golden')
  await write(parent, 0, pattern(2, 4 * MiB)) // the parent moves on after the snapshot
  const golden = await image(parent, 'golden')
  const parentNow = await image(parent)

  const started = Date.now()
  const out = await ok('clone', parent, 'golden', clone)
  const ms = Date.now() - started
  t.match(out, /cloned snapshot golden of .* in \d+ ms \(nothing copied/)
  t.comment(`clone of a snapshot with 20 MiB written: ${ms} ms for the whole command (${out.trim()})`)
  t.equal(fs.readdirSync(path.join(clone, 'segments')).length <= 1, true, 'nothing copied: at most an empty first segment')
  t.ok(crypto.createHash('sha256').update(await image(clone)).digest('hex') === crypto.createHash('sha256').update(golden).digest('hex'), 'the clone reads as the snapshot')

  // Writes go to the clone (one unaligned, over a block the parent has data in).
  const mine = pattern(3, 3 * MiB)
  await write(clone, 10 * MiB + 123, mine, 'c1')
  const want = Buffer.from(golden)
  mine.copy(want, 10 * MiB + 123)
  t.ok((await image(clone)).equals(want), 'the clone: its writes over the snapshot')
  t.ok((await image(clone, 'c1')).equals(want), 'a snapshot of the clone reads through too')
  t.ok((await image(parent, 'golden')).equals(golden), 'the parent\'s snapshot is untouched')
  t.ok((await image(parent)).equals(parentNow), 'and its current image')
  t.match(await ok('status', clone), /written +3\.0 MiB/, 'the clone holds only what it wrote')

  // The parent protects the snapshot, naming the clone; the clone refuses what would miss its parent.
  const refused = await cli('delete', parent, 'golden')
  t.not(refused.code, 0)
  t.match(refused.stderr, new RegExp(`^logdisk: snapshot golden is the base of clone ${clone}: promote`), 'delete refused, naming the clone')
  t.equal(refused.stderr.trim().split('\n').length, 1, 'one line')
  const restore = await cli('restore', clone, '--at', 'c1', '--out', path.join(root, 'r.img'))
  t.match(restore.stderr, /is a clone of snapshot golden .* promote it first/, 'restore of a clone is refused, not wrong')

  // Promote: refused while the clone has snapshots (they read through too), then it stands alone.
  t.match((await cli('promote', clone)).stderr, /has snapshots \(c1\)/)
  await ok('delete', clone, 'c1')
  // The parent in use (mounted, or a command on it): the refusal names the parent; it said the
  // clone was mounted, which it was not (helper-72).
  const held = (await openStore(parent)).store
  try {
    const busy = await cli('promote', clone)
    t.equal(busy.code, 1)
    t.ok(busy.stderr.startsWith(`logdisk: ${clone} is a clone of snapshot golden of ${parent}, which cannot be opened: it is mounted or in use`) && busy.stderr.includes('unmount the parent first'), `promote with the parent in use names the parent: ${busy.stderr}`)
  } finally {
    await held.close()
  }
  const p = await ok('promote', clone)
  t.match(p, /promoted .* copied \d+ blocks/)
  t.notOk(fs.existsSync(path.join(clone, 'clone.json')), 'no longer a clone')
  await ok('delete', parent, 'golden')
  fs.rmSync(parent, { recursive: true, force: true })
  t.ok((await image(clone)).equals(want), 'the promoted clone reads the same without its parent')
  // A point before the promote read the parent's blocks through it: given up, not zeros
  // (it restored zeros where the parent's blocks were: a hostile test, 2026-12-06).
  t.match(p, /points up to sequence \d+, which read through it, are given up/)
  const before = await cli('restore', clone, '--at', '1', '--out', path.join(root, 'r0.img'))
  t.not(before.code, 0, 'a point before the promote is refused')
  t.match(before.stderr, /^logdisk: sequence 1 is older than the history this store kept/)
  t.notOk(fs.existsSync(path.join(root, 'r0.img')), 'and writes no image')
  await ok('sync', clone, '--note', 'promoted')
  await ok('restore', clone, '--at', 'promoted', '--out', path.join(root, 'r.img'))
  t.ok(fs.readFileSync(path.join(root, 'r.img')).equals(want), 'a point after the promote restores the whole image')
})
