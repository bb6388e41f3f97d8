// The identity file (src/copy/identity-cache.ts) and carried c2 identities: a send remembers
// the identities it computed and the next incremental send uses them; a receive remembers the
// identity it checked; an entry that no longer describes the same snapshot (deleted and cut
// again under the same name, another size, another store uuid, a damaged file) is ignored and
// the identity walked again; a wrong identity for a base makes receive refuse, not apply.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { BlockSetHash } from '../src/copy/block-set-hash'
import { IDENTITY_FILE, readIdentities, rememberIdentities } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { sendStreamTo } from '../src/copy/send'
import { setIdentitiesAt, walkIdentities } from '../src/copy/set-identity'
import { readStreamHeader } from '../src/copy/stream-format'
import { crc32c } from '../src/store'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'
import { cutAndSend, newStreamStore } from './helpers/stream-stores'

const B = 4096
const SIZE = 8 << 20

const newStore = (root: string, name: string): Promise<Store> => newStreamStore(root, name, SIZE)

async function writeBlocks (s: Store, blocks: number[], fill?: number): Promise<void> {
  for (const b of blocks) await s.write(b * B, fill === undefined ? crypto.randomBytes(B) : Buffer.alloc(B, fill))
  await s.flush()
}

async function snapshotSha (s: Store, name: string): Promise<string> {
  return crypto.createHash('sha256').update(await s.readSnapshot(name, 0, s.sizeBytes)).digest('hex')
}

/** Rewrites the identity file with `edit` applied to its entries, with a valid checksum. */
function editIdentities (dir: string, edit: (entries: Array<Record<string, unknown>>) => void): void {
  const file = path.join(dir, IDENTITY_FILE)
  const body = JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[0])
  edit(body.entries)
  const line = JSON.stringify(body)
  fs.writeFileSync(file, `${line}\n${crc32c(Buffer.from(line))}\n`)
}

t.test('send remembers identities; an incremental send and receive carry them and give the same image', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 1, 2, 9, 100, 1500, 2000])
    await writeBlocks(src, [3], 0) // zeros: absent from the identity
    const a = await cutAndSend(src, root, 'a')
    const [walkedA] = await walkIdentities(src, [a.seq])
    t.same([...readIdentities(src)], [[a.seq, walkedA]], 'the full send remembered a\'s identity')
    t.equal((await readStreamHeader(path.join(root, 'a.stream'))).format, 2, 'streams are written in format 2')

    await receiveStream(dst, path.join(root, 'a.stream'))
    t.same([...readIdentities(dst).values()], [walkedA], 'the receive remembered the identity it checked')

    await writeBlocks(src, [1, 5, 2000])
    await writeBlocks(src, [9], 0) // now zeros
    await src.discard(100 * B, B)
    const b = await cutAndSend(src, root, 'b', 'a')
    const header = await readStreamHeader(path.join(root, 'ab.stream'))
    const [walkedB] = await walkIdentities(src, [b.seq])
    t.equal(header.from!.identity, walkedA, 'base identity from the file')
    t.equal(header.snapshot.identity, walkedB, 'carried identity of b equals the walk')
    t.equal(readIdentities(src).get(b.seq), walkedB, 'b remembered')

    await receiveStream(dst, path.join(root, 'ab.stream'))
    t.equal(await snapshotSha(dst, 'b'), await snapshotSha(src, 'b'), 'b received byte for byte')
    t.equal(readIdentities(dst).get(dst.snapshotNamed('b').seq), walkedB, 'the receiver remembered b')
    t.equal((await walkIdentities(dst, [dst.snapshotNamed('b').seq]))[0], walkedB, 'and it is what a walk of the receiver gives')
  } finally {
    await src.close()
    await dst.close()
  }
})

t.test('entries that no longer describe the snapshot are ignored', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const s = await newStore(root, 's')
  try {
    await writeBlocks(s, [0, 1, 2])
    const a = await s.snapshot({ name: 'a' })
    const [walkedA] = await walkIdentities(s, [a.seq])
    t.ok(await rememberIdentities(s, new Map([[a.seq, walkedA]]), s.sizeBytes), 'written')

    // Deleted and cut again under the same name, after other writes: another cut.
    await s.deleteSnapshot('a')
    await writeBlocks(s, [7])
    const a2 = await s.snapshot({ name: 'a' })
    t.same([...readIdentities(s)], [], 'the entry of the deleted snapshot is not used for the new one')
    const [walkedA2] = await walkIdentities(s, [a2.seq])
    t.not(walkedA2, walkedA)
    t.equal((await setIdentitiesAt(s, [a2.seq]))[0], walkedA2, 'the identity of the new a is walked')

    await rememberIdentities(s, new Map([[a2.seq, walkedA2]]), s.sizeBytes)
    const good = fs.readFileSync(path.join(s.dir, IDENTITY_FILE))
    for (const [what, edit] of [
      ['another position', (e: Array<Record<string, unknown>>) => { e[0].position = Number(e[0].position) + 1 }],
      ['another time', (e: Array<Record<string, unknown>>) => { e[0].timeMs = Number(e[0].timeMs) + 1 }],
      ['another name', (e: Array<Record<string, unknown>>) => { e[0].name = 'other' }],
      ['another volume size', (e: Array<Record<string, unknown>>) => { e[0].sizeBytes = SIZE * 2 }]
    ] as const) {
      fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), good)
      editIdentities(s.dir, edit)
      t.same([...readIdentities(s)], [], `an entry with ${what} is ignored`)
    }
    const bad = Buffer.from(good)
    bad[10] ^= 1
    fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), bad)
    t.same([...readIdentities(s)], [], 'a file failing its checksum is ignored')
    fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), good.subarray(0, 20))
    t.same([...readIdentities(s)], [], 'a truncated file is ignored')
    fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), good)
    const body = JSON.parse(good.toString().split('\n')[0])
    body.uuid = crypto.randomUUID()
    const line = JSON.stringify(body)
    fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), `${line}\n${crc32c(Buffer.from(line))}\n`)
    t.same([...readIdentities(s)], [], 'a file of another store (uuid) is ignored')
    fs.writeFileSync(path.join(s.dir, IDENTITY_FILE), good)
    t.same([...readIdentities(s)], [[a2.seq, walkedA2]], 'the intact file is used')
  } finally {
    await s.close()
  }

  // After a resize the geometry (part of the identity) differs: the entry is not used.
  const dir = path.join(root, 's')
  const r = (await openStore(dir, { checkpointIntervalMs: 0 })).store
  try {
    await r.resize(SIZE * 2)
    const seq = r.snapshotNamed('a').seq
    t.same([...readIdentities(r)], [], 'after a resize the entry is ignored')
    const [walked] = await walkIdentities(r, [seq])
    t.equal((await setIdentitiesAt(r, [seq]))[0], walked, 'and the identity at the new size is walked')
    t.equal(BlockSetHash.parse(walked)!.toString(), walked, 'an identity parses back to itself')
  } finally {
    await r.close()
  }
})

t.test('a base whose remembered identity differs from the stream\'s is refused and nothing is applied', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 1, 2])
    await cutAndSend(src, root, 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    await writeBlocks(src, [4])
    await cutAndSend(src, root, 'b', 'a')
    // The receiver's remembered identity of a says something else: a different base.
    editIdentities(dst.dir, e => { e[0].identity = BlockSetHash.empty(SIZE, B).toString() })
    const before = crypto.createHash('sha256').update(await dst.read(0, SIZE)).digest('hex')
    await t.rejects(receiveStream(dst, path.join(root, 'ab.stream')), { code: 'BAD_ARGUMENT' }, 'refused: not the stream\'s base')
    t.equal(crypto.createHash('sha256').update(await dst.read(0, SIZE)).digest('hex'), before, 'the current volume is unchanged')
    t.same(dst.snapshots().map(s => s.name), ['a'], 'no snapshot cut')
    // Without the file the identity is walked and the stream applies.
    fs.rmSync(path.join(dst.dir, IDENTITY_FILE))
    await receiveStream(dst, path.join(root, 'ab.stream'))
    t.equal(await snapshotSha(dst, 'b'), await snapshotSha(src, 'b'), 'b received byte for byte')
  } finally {
    await src.close()
    await dst.close()
  }
})

t.test('an incremental receive with --force over local writes: the carried identity covers the rolled-back blocks', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 1, 2, 50])
    await cutAndSend(src, root, 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    await writeBlocks(src, [1, 60])
    await cutAndSend(src, root, 'b', 'a')
    await writeBlocks(dst, [1, 2, 70]) // local writes since a: 1 is in the stream, 2 and 70 are not
    await dst.discard(50 * B, B)
    await t.rejects(receiveStream(dst, path.join(root, 'ab.stream')), { code: 'BAD_ARGUMENT' }, 'refused without --force')
    const r = await receiveStream(dst, path.join(root, 'ab.stream'), { force: true })
    t.equal(r.rolledBack, 3, 'blocks 2, 50 and 70 rolled back')
    t.equal(await snapshotSha(dst, 'b'), await snapshotSha(src, 'b'), 'b received byte for byte')
    t.equal(readIdentities(dst).get(dst.snapshotNamed('b').seq), (await walkIdentities(dst, [dst.snapshotNamed('b').seq]))[0], 'the remembered identity is the walked one')
  } finally {
    await src.close()
    await dst.close()
  }
})

t.test('a write to another block while an incremental applies is caught by the carried identity: no snapshot is cut', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 1, 2, 50])
    await cutAndSend(src, root, 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    await writeBlocks(src, [1, 60, 61, 62])
    await cutAndSend(src, root, 'b', 'a')
    // As a writer on the mounted store would: block 70 (not in the stream) changes meanwhile.
    let injected: Promise<void> | undefined
    // (Progress past half is the applying; the first half is the check of the stream.)
    const onProgress = (done: number, total: number): void => { if (done > total / 2) injected ??= dst.write(70 * B, Buffer.alloc(B, 7)) }
    await t.rejects(receiveStream(dst, path.join(root, 'ab.stream'), { onProgress }), { code: 'CORRUPT' }, 'the identity after applying is not b\'s')
    await injected
    t.same(dst.snapshots().map(s => s.name), ['a'], 'no snapshot b')
    t.notOk([...readIdentities(dst).values()].includes((await readStreamHeader(path.join(root, 'ab.stream'))).snapshot.identity), 'b\'s identity is not remembered')
  } finally {
    await src.close()
    await dst.close()
  }
})

t.test('an incremental of many scattered blocks (records staged into large writes, runs read in flight) arrives byte for byte', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 5, 10])
    await cutAndSend(src, root, 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    const scattered = Array.from({ length: 700 }, (_, i) => i * 2 + 1) // no two adjacent: 700 records of one block
    await writeBlocks(src, scattered)
    await src.write(100 * B + 1, Buffer.alloc(3 * B, 9)) // and a run of four (unaligned: read-modify-write)
    await src.flush()
    await src.snapshot({ name: 'b' })
    const r = await sendStreamTo(src, 'b', 'a', { out: path.join(root, 'ab.stream') })
    t.ok(r.bytes > 2 * 1024 * 1024, `the stream (${r.bytes} bytes) fills the 1 MiB stage more than twice`)
    const got = await receiveStream(dst, path.join(root, 'ab.stream'))
    t.equal(got.dataBlocks, r.dataBlocks, 'every data block applied')
    t.equal(await snapshotSha(dst, 'b'), await snapshotSha(src, 'b'), 'b received byte for byte')
  } finally {
    await src.close()
    await dst.close()
  }
})

t.test('a write that lands while receive checks the current volume is caught too (the carry starts where the check ended)', async t => {
  const root = tmpDir('identity-cache')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  const src = await newStore(root, 'src')
  const dst = await newStore(root, 'dst')
  try {
    await writeBlocks(src, [0, 1, 2])
    await cutAndSend(src, root, 'a')
    await receiveStream(dst, path.join(root, 'a.stream'))
    await writeBlocks(src, [1, 60])
    await cutAndSend(src, root, 'b', 'a')
    // The first changedBlocks call is receive's check that nothing was written since a: a
    // writer's block 70 lands after the check's end point was read, before the check ends.
    const changedBlocks = dst.changedBlocks.bind(dst)
    let calls = 0
    dst.changedBlocks = async function * (fromSeq: number, toSeq: number) {
      if (calls++ === 0) await dst.write(70 * B, Buffer.alloc(B, 7))
      yield * changedBlocks(fromSeq, toSeq)
    }
    await t.rejects(receiveStream(dst, path.join(root, 'ab.stream')), { code: 'CORRUPT' }, 'refused: the volume is not b')
    t.same(dst.snapshots().map(s => s.name), ['a'], 'no snapshot b')
  } finally {
    await src.close()
    await dst.close()
  }
})
