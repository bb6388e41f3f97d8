// Resize defects a hostile test found (helper-86, 2026-12-07), each driven through the library
// and made deterministic by holding the append lock (a log writev that waits) or by running
// the resize from inside the other operation:
// - D1: a clone could be shrunk below blocks it reads from its parent's snapshot (the check
//   looked only at the clone's own versions); a grow then showed the parent's data where new
//   blocks must read zeros.
// - D2: a shrink's refusal (open images, in the daemon) was checked before it waited for the
//   lock, and a resize whose client went away while it waited still happened.
// - D3: two relative grows at once grew once (the size was read before the lock).
// - D6: a shrink accepted while a receive applied its stream: the receive failed CORRUPT ("was
//   it written meanwhile?") with part of the stream applied.
// - D7: a shrink accepted while a criteria copy ran failed the copy ("bad block range").
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { openStore } from '../src/app/open'
import { makeClone } from '../src/clone/clone'
import { copyByCriteria, createCriteria } from '../src/copy/criteria'
import { receiveStream } from '../src/copy/receive'
import { ops } from '../src/ops/ops'
import { Store } from '../src/store/store'
import { heldLockStore, lockOf, until } from './helpers/held-lock'
import { cutAndSend, newStreamStore } from './helpers/stream-stores'
import { scratchDir, tagBlock } from './helpers/sim-layer'

const B = 4096
const blk = (tag: string): Buffer => tagBlock(tag, B)
/** The resize op as the daemon runs it; `ctx` untyped so that this file compiles against older ops too. */
const resizeOp = (s: Store, args: Record<string, unknown>, ctx: Record<string, unknown> = {}): Promise<{ fromBytes: number, toBytes: number }> =>
  (ops.resize as (s: Store, a: Record<string, unknown>, c: never) => Promise<{ fromBytes: number, toBytes: number }>)(s, args, ctx as never)

t.test('D3: two relative grows queued at once both count', async t => {
  const { s, holdLock } = await heldLockStore(t, 'logdisk-resize-holds')
  const { release } = await holdLock()
  const lock = lockOf(s)
  const queued = lock.queued
  const a = resizeOp(s, { sizeBytes: 16 * B, grow: true })
  await until('the first grow queued on the append lock', () => lock.queued > queued)
  const b = resizeOp(s, { sizeBytes: 16 * B, grow: true })
  await new Promise(resolve => setImmediate(resolve))
  await release()
  const [ra, rb] = await Promise.all([a, b])
  t.same([ra, rb], [{ fromBytes: 64 * B, toBytes: 80 * B, dir: s.dir }, { fromBytes: 80 * B, toBytes: 96 * B, dir: s.dir }], 'each grows from the size the other left')
  t.equal(s.sizeBytes, 96 * B, 'grown twice')
})

t.test('D2: a shrink is checked again (open images, a client gone) once it holds the lock', async t => {
  const { s, holdLock } = await heldLockStore(t, 'logdisk-resize-holds')
  // A client that went away while the shrink waited: nothing changes.
  let gone = false
  let lock = await holdLock()
  const l = lockOf(s)
  let queued = l.queued
  const cancelled = resizeOp(s, { sizeBytes: 32 * B }, { cancelled: () => gone })
  await until('the shrink queued on the append lock', () => l.queued > queued)
  gone = true
  await lock.release()
  const r1 = await cancelled.then(() => undefined, (err: unknown) => err)
  t.match(r1, { code: 'INTERRUPTED', message: /nothing was changed/ }, 'the shrink whose client went away is not made')
  t.equal(s.sizeBytes, 64 * B, 'the size stays')

  // An image opened while the shrink waited: the daemon's check runs under the lock.
  let openImages = 0
  const ready = (from: number, to: number): void => { if (to < from && openImages > 0) throw Object.assign(new Error('open'), { code: 'BUSY' }) }
  lock = await holdLock()
  queued = l.queued
  const busy = resizeOp(s, { sizeBytes: 32 * B }, { resizeReady: ready })
  await until('the shrink queued on the append lock', () => l.queued > queued)
  openImages = 1
  await lock.release()
  const r2 = await busy.then(() => undefined, (err: unknown) => err)
  t.match(r2, { code: 'BUSY' }, 'refused: an image was opened while it waited')
  t.equal(s.sizeBytes, 64 * B, 'the size stays')
  openImages = 0
  t.same(await resizeOp(s, { sizeBytes: 32 * B }, { resizeReady: ready, cancelled: () => false }), { fromBytes: 64 * B, toBytes: 32 * B, dir: s.dir }, 'closed again: the shrink goes')
})

t.test('D1: a clone is not shrunk below blocks it reads from its parent', async t => {
  const root = scratchDir(t, 'logdisk-resize-clone')
  const parentDir = path.join(root, 'parent')
  const cloneDir = path.join(root, 'clone')
  await Store.create(parentDir, { sizeBytes: 64 * B, blockBytes: B, segmentBytes: 258 * B })
  const parent = await Store.open(parentDir)
  await parent.write(2 * B, blk('low'))
  await parent.write(50 * B, blk('tail'))
  const snap = await parent.snapshot({ name: 's1' })
  await parent.write(60 * B, blk('after')) // not in s1
  await parent.close()
  await makeClone(parentDir, { name: 's1', seq: snap.seq }, cloneDir)

  const { store: c } = await openStore(cloneDir, { historyKeepMs: 0 })
  t.teardown(() => c.close().catch(() => undefined))
  t.ok((await c.read(50 * B, B)).equals(blk('tail')), 'the clone reads the parent\'s block 50')
  const r1 = await c.resize(32 * B).then(() => undefined, (err: unknown) => err)
  t.match(r1, { code: 'BAD_ARGUMENT', message: /cannot shrink .* block 50 \(byte 204800\) past the new end was written/ }, 'refused: block 50 reads the parent\'s data')
  t.equal(c.sizeBytes, 64 * B, 'the size stays')
  t.same(await c.resize(56 * B), { fromBytes: 64 * B, toBytes: 56 * B }, 'a shrink past only what s1 does not hold goes (block 60 is not in s1)')
  t.ok((await c.read(50 * B, B)).equals(blk('tail')), 'block 50 still reads the parent\'s')

  // Discarded in the clone, the tail reads zeros; with no history kept and compacted, no point reads it either.
  await c.discard(32 * B, 24 * B)
  await c.flush()
  await c.compact({ cleanBelow: 0 })
  t.same(await c.resize(32 * B), { fromBytes: 56 * B, toBytes: 32 * B }, 'discarded in the clone: the shrink goes')
  await c.resize(64 * B)
  t.ok((await c.read(32 * B, 32 * B)).equals(Buffer.alloc(32 * B)), 'grown again, the new blocks read zeros')
  t.ok((await c.read(2 * B, B)).equals(blk('low')), 'block 2 still reads the parent\'s')
})

t.test('D1: a clone\'s snapshot taken before a discard keeps the parent\'s blocks from being cut', async t => {
  const root = scratchDir(t, 'logdisk-resize-clone-snap')
  const parentDir = path.join(root, 'parent')
  const cloneDir = path.join(root, 'clone')
  await Store.create(parentDir, { sizeBytes: 64 * B, blockBytes: B, segmentBytes: 258 * B })
  const parent = await Store.open(parentDir)
  await parent.write(50 * B, blk('tail'))
  const snap = await parent.snapshot({ name: 's1' })
  await parent.close()
  await makeClone(parentDir, { name: 's1', seq: snap.seq }, cloneDir)
  const { store: c } = await openStore(cloneDir, { historyKeepMs: 0 })
  t.teardown(() => c.close().catch(() => undefined))
  await c.write(0, blk('own'))
  await c.snapshot({ name: 'keep' })
  await c.discard(32 * B, 32 * B)
  await c.flush()
  await c.compact({ cleanBelow: 0 })
  const r = await c.resize(32 * B).then(() => undefined, (err: unknown) => err)
  t.match(r, { code: 'BAD_ARGUMENT', message: /block 50 / }, 'refused: snapshot keep reads block 50 from the parent')
  t.ok((await c.readSnapshot('keep', 50 * B, B)).equals(blk('tail')), 'and keep still reads it')
})

t.test('D6: no resize while a receive applies its stream', async t => {
  const root = scratchDir(t, 'logdisk-resize-receive')
  const SIZE = 256 * B
  const src = await newStreamStore(root, 'src', SIZE)
  const dst = await newStreamStore(root, 'dst', SIZE)
  t.teardown(async () => { await src.close().catch(() => undefined); await dst.close().catch(() => undefined) })
  await src.write(0, crypto.randomBytes(16 * B))
  await cutAndSend(src, root, 'a')
  // A shrink asked while the stream is applied (from inside its flush, after its last write).
  const flush = dst.flush.bind(dst)
  let shrink: unknown
  dst.flush = async () => {
    if (shrink === undefined) shrink = await dst.resize(128 * B).then(r => r, (err: unknown) => err)
    return await flush()
  }
  const r = await receiveStream(dst, path.join(root, 'a.stream')).then(x => x, (err: unknown) => err)
  dst.flush = flush
  t.match(shrink, { code: 'BUSY', message: /cannot resize .* while a receive applies a stream to it/ }, 'the shrink is refused')
  t.equal(dst.sizeBytes, SIZE, 'the size stays')
  t.match(r, { snapshot: { name: 'a' } }, 'the receive cuts its snapshot')
  t.same(dst.snapshots().map(s => s.name), ['a'])
  t.same(await dst.resize(128 * B), { fromBytes: SIZE, toBytes: 128 * B }, 'after the receive, the shrink goes')
})

t.test('D7: no shrink while a criteria copy reads its range', async t => {
  const root = scratchDir(t, 'logdisk-resize-criteria')
  const dir = path.join(root, 's')
  await Store.create(dir, { sizeBytes: 256 * B, blockBytes: B, segmentBytes: 258 * B })
  const { store: s } = await openStore(dir, { historyKeepMs: 0 })
  t.teardown(() => s.close().catch(() => undefined))
  await s.write(0, crypto.randomBytes(16 * B))
  const snap = await s.snapshot({ name: 'full-1' })
  createCriteria(dir, { name: 'full', target: path.join(root, '{snapshot}.img') })
  // A shrink asked while the copy reads (from inside its first read); a grow goes.
  const readBlocksAt = s.readBlocksAt.bind(s)
  let shrink: unknown
  let grow: unknown
  s.readBlocksAt = async (...a: Parameters<Store['readBlocksAt']>) => {
    if (shrink === undefined) {
      shrink = await s.resize(128 * B).then(r => r, (err: unknown) => err)
      grow = await s.resize(512 * B).then(r => r, (err: unknown) => err)
    }
    return await readBlocksAt(...a)
  }
  const r = await copyByCriteria(s, 'full', snap.name).then(x => x, (err: unknown) => err)
  s.readBlocksAt = readBlocksAt
  t.match(shrink, { code: 'BUSY', message: /cannot resize .* while criteria full copies snapshot full-1/ }, 'the shrink is refused')
  t.same(grow, { fromBytes: 256 * B, toBytes: 512 * B }, 'a grow goes')
  t.match(r, { snapshot: 'full-1', blocks: 256 }, 'the copy finishes with the range it started with')
  t.equal(fs.statSync(path.join(root, 'full-1.img')).size, 256 * B)
  t.same(await s.resize(128 * B), { fromBytes: 512 * B, toBytes: 128 * B }, 'after the copy, the shrink goes')
})

t.test('D5: a resize killed before its rename leaves no temp; the CLI says what size the store has', async t => {
  const root = scratchDir(t, 'logdisk-resize-temp')
  const dir = path.join(root, 's')
  await Store.create(dir, { sizeBytes: 64 * B, blockBytes: B })
  // A pid that ran and is gone (a daemon killed before writeFileAtomic renamed its temp).
  const { spawnSync } = await import('node:child_process')
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout
  const leftover = path.join(dir, `store.json.tmp-${dead}-abc123`)
  const live = path.join(dir, `policy.json.tmp-${process.ppid}-def456`) // a live writer's stays
  fs.writeFileSync(leftover, '{}')
  fs.writeFileSync(live, '{}')
  const s = await Store.open(dir)
  await s.close()
  t.notOk(fs.existsSync(leftover), 'the dead writer\'s temp is removed at the next open')
  t.ok(fs.existsSync(live), 'a live writer\'s temp stays')
  fs.rmSync(live)

  const { resizeOutcome } = await import('../src/cli/on-store') as unknown as { resizeOutcome?: (dir: string, args: Record<string, unknown>) => string }
  t.ok(resizeOutcome, 'on-store says what a resize whose daemon died left')
  if (!resizeOutcome) return
  t.match(resizeOutcome(dir, { sizeBytes: 64 * B }), /^it finished: .* is 256.0 KiB \(262144 bytes\) now/)
  t.match(resizeOutcome(dir, { sizeBytes: 32 * B }), /^it did not finish: .* is 256.0 KiB/)
  t.match(resizeOutcome(dir, { sizeBytes: 16 * B, grow: true }), /may or may not have finished: .* is 256.0 KiB .*before growing again/)
  t.match(resizeOutcome(dir, { sizeBytes: 16 * B, grow: true, sizeBefore: 48 * B }), /^it finished: .* is 256.0 KiB \(262144 bytes\) now \(store.json; it was 192.0 KiB/)
  t.match(resizeOutcome(dir, { sizeBytes: 16 * B, grow: true, sizeBefore: 64 * B }), /^it did not finish: .* is still 256.0 KiB/)
})
