// A receive whose writes fail halfway must fail with that error, not as an unhandled rejection
// (which ends the process: the mount daemon, when receive goes through it). A receive that dies halfway (some records applied, no snapshot, the store not closed), then
// retried: refused without --force (the current volume is no longer the base), applied with it,
// and the snapshot and the identity it remembers are the sender's; a chain received out of
// order is refused until its base is there; the next incremental carries the remembered identity.
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { readIdentities } from '../src/copy/identity-cache'
import { receiveStream } from '../src/copy/receive'
import { APPLYING_FILE, unfinishedReceive, unfinishedReceiveText } from '../src/copy/receive-marker'
import { sendStreamTo } from '../src/copy/send'
import { walkIdentities } from '../src/copy/set-identity'
import { readStreamHeader } from '../src/copy/stream-format'
import { Store } from '../src/store/store'
import { tmpDir } from './helpers/cli'

const B = 4096
const SIZE = 4 << 20

async function open (dir: string): Promise<Store> {
  return (await openStore(dir, { checkpointIntervalMs: 0 })).store
}

t.test('receive interrupted halfway, then retried; chains out of order', { timeout: 60_000 }, async t => {
  const root = tmpDir('receive-interrupted')
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
  await Store.create(path.join(root, 'src'), { sizeBytes: SIZE, blockBytes: B })
  await Store.create(path.join(root, 'dst'), { sizeBytes: SIZE, blockBytes: B })
  const src = await open(path.join(root, 'src'))
  let dst = await open(path.join(root, 'dst'))
  const f = (n: string): string => path.join(root, n)
  try {
    await src.write(0, crypto.randomBytes(40 * B))
    await src.snapshot({ name: 'a' })
    for (let b = 0; b < 300; b += 3) await src.write(b * B, crypto.randomBytes(B))
    await src.discard(1 * B, B)
    await src.write(4 * B, Buffer.alloc(B))
    await src.snapshot({ name: 'b' })
    await src.write(500 * B, crypto.randomBytes(B))
    await src.discard(3 * B, B)
    await src.snapshot({ name: 'c' })
    await sendStreamTo(src, 'a', undefined, { out: f('a') })
    await sendStreamTo(src, 'b', 'a', { out: f('ab') })
    await sendStreamTo(src, 'c', 'b', { out: f('bc') })

    await t.rejects(receiveStream(dst, f('ab')), { code: 'NOT_FOUND' }, 'a->b before a: refused')
    await receiveStream(dst, f('a'))
    await t.rejects(receiveStream(dst, f('bc')), { code: 'NOT_FOUND' }, 'b->c before b: refused')

    // Dies after 20 writes of a->b: they are in the log, the rest never comes.
    const write = dst.write.bind(dst)
    let n = 0
    // (A failing write rejects a moment later, as an I/O error does, while receive reads on.)
    dst.write = (offset, data, crcs) => n++ < 20 ? write(offset, data, crcs) : new Promise((resolve, reject) => setImmediate(() => reject(new Error('killed'))))
    const died = await receiveStream(dst, f('ab')).then(() => undefined, (err: Error) => err)
    t.equal(died?.message, 'killed', 'the first receive dies halfway')
    dst.write = write
    await dst.flush()
    await dst.abandon()
    dst = await open(path.join(root, 'dst'))
    t.same(dst.snapshots().map(s => s.name), ['a'], 'no b after the crash')
    // The store says a receive was part way (helper-63: the retry blamed the user's writes).
    const marker = path.join(root, 'dst', APPLYING_FILE)
    t.ok(fs.existsSync(marker), 'the failed receive left its applying marker')
    // It failed in this process, which lives on (as a daemon does): still read as part way.
    const failed = unfinishedReceive(path.join(root, 'dst'))
    t.same({ kind: failed?.kind, failed: failed?.failed, base: failed?.base }, { kind: 'applying', failed: true, base: 'a' }, 'read as a receive that failed part way, its process alive')
    t.equal(unfinishedReceiveText(path.join(root, 'dst'), failed!), `the current volume of ${path.join(root, 'dst')} holds part of a stream that a receive failed while applying (pid ${process.pid}, started ${failed!.startedAt}): receive again with --force, which rolls it back to a (with any write made since) and applies the stream whole`)
    // Killed instead (kill -9): its pid is gone.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!
    const { failed: _, ...killed } = JSON.parse(fs.readFileSync(marker, 'utf8')) as Record<string, unknown> // eslint-disable-line @typescript-eslint/no-unused-vars
    fs.writeFileSync(marker, JSON.stringify({ ...killed, pid: dead }))
    const unfinished = unfinishedReceive(path.join(root, 'dst'))
    t.equal(unfinished?.kind, 'applying', 'read as a receive that did not finish applying')
    t.equal(unfinishedReceiveText(path.join(root, 'dst'), unfinished!), `the current volume of ${path.join(root, 'dst')} holds part of a stream that a receive did not finish applying (pid ${dead}, started ${unfinished!.startedAt}): receive again with --force, which rolls it back to a (with any write made since) and applies the stream whole`)
    await t.rejects(receiveStream(dst, f('ab')), { code: 'BAD_ARGUMENT' }, 'the retry is refused without --force')
    await receiveStream(dst, f('ab'), { force: true })
    t.notOk(fs.existsSync(marker), 'a receive that finishes leaves no marker')
    t.ok((await dst.readSnapshot('b', 0, SIZE)).equals(await src.readSnapshot('b', 0, SIZE)), 'b reads as the sender\'s')
    const bSeq = dst.snapshotNamed('b').seq
    t.equal(readIdentities(dst).get(bSeq), (await walkIdentities(dst, [bSeq]))[0], 'b\'s remembered identity is the walk\'s')
    t.equal(readIdentities(dst).get(bSeq), (await readStreamHeader(f('ab'))).snapshot.identity, 'and the sender\'s')
    await receiveStream(dst, f('bc'))
    t.ok((await dst.readSnapshot('c', 0, SIZE)).equals(await src.readSnapshot('c', 0, SIZE)), 'c reads as the sender\'s')
  } finally {
    await src.close()
    await dst.close()
  }
})
