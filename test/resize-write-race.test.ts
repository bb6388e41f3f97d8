// A shrink (Store.resize) checks that no block past the new end holds data, under the append
// lock; a write checks its range against the size when it is called, before it queues on
// that lock. A write called while the shrink waited for the lock passed its check against the
// old size, queued behind the shrink, and landed past the new end, acknowledged: a later
// grow showed its bytes where the new blocks must read as zeros. The append lock checks
// again now (log-appender.ts): such a write fails OUT_OF_RANGE and appends nothing.
// And the other way round: versions appended after the shrink's checkpoint and before it
// took the lock (a write past the new end, a snapshot of it, a trim of it) were in no history
// the check read, so the shrink went through and cut the snapshot's block off its image.
import t from 'tap'
import { heldLockStore, lockOf, until } from './helpers/held-lock'
import { tagBlock } from './helpers/sim-layer'

const B = 4096
const blk = (tag: string): Buffer => tagBlock(tag, B)

for (const kind of ['write', 'unaligned write', 'discard'] as const) {
  t.test(`a ${kind} queued behind a shrink never lands past the new end`, async t => {
    const { s, holdLock } = await heldLockStore(t, 'logdisk-resize-race')
    if (kind === 'discard') await s.write(40 * B, blk('old')) // a discard of a block that holds nothing appends nothing
    for (let b = 0; b < 4; b++) await s.write(b * B, blk(`A${b}`))
    await s.flush()
    if (kind === 'discard') {
      await s.discard(40 * B, B)
      await s.compact({ cleanBelow: 0 }) // block 40 holds only a trim: a shrink past it may go
    }

    const held = await holdLock() // a write that takes the append lock and holds it in its writev
    const first = held.written
    const lock = lockOf(s)
    const queued = lock.queued
    const shrink = s.resize(32 * B)
    await until('the shrink queued on the append lock', () => lock.queued > queued)
    // Checked against the old size: 64 blocks.
    const late = kind === 'write'
      ? s.write(40 * B, blk('late'))
      : kind === 'unaligned write' ? s.write(40 * B + 100, Buffer.from('late bytes')) : s.discard(40 * B, B)
    held.release().catch(() => undefined) // `first` settles it: asserted below
    const [w1, r, w2] = await Promise.allSettled([first, shrink, late])
    t.equal(w1.status, 'fulfilled', 'the first write succeeds')
    t.equal(r.status, 'fulfilled', 'the shrink succeeds (nothing past the new end when it checked)')
    t.equal(w2.status, 'rejected', `the late ${kind} fails`)
    if (w2.status === 'rejected') t.match((w2.reason as { code?: string }).code, 'OUT_OF_RANGE', 'as out of range')
    t.equal(s.sizeBytes, 32 * B)
    await s.resize(64 * B)
    const got = await s.read(40 * B, B)
    t.ok(got.equals(Buffer.alloc(B)), 'block 40 reads zeros after growing again')
    await s.flush()
    const v = await s.verify()
    t.same(v.problems, [])
  })
}

t.test('a snapshot of a block past the new end, taken while a shrink waited for the lock, refuses the shrink', async t => {
  const { s, holdLock } = await heldLockStore(t, 'logdisk-resize-race')
  for (let b = 0; b < 4; b++) await s.write(b * B, blk(`A${b}`))
  await s.flush()
  await s.checkpoint()
  const held = await holdLock() // a write that takes the append lock and holds it in its writev
  const first = held.written
  const shrink = s.resize(32 * B) // checkpoints, then queues on the lock
  // Queued before the shrink's lock section, after the log position its checkpoint took.
  const ops = [s.write(40 * B, blk('P')), s.snapshot({ name: 'keep' }), s.discard(40 * B, B)]
  held.release().catch(() => undefined) // `first` settles it: asserted below
  const [w1, r, ...rest] = await Promise.allSettled([first, shrink, ...ops])
  t.equal(w1.status, 'fulfilled')
  t.same(rest.map(x => x.status), ['fulfilled', 'fulfilled', 'fulfilled'], 'the write, the snapshot and the trim succeed')
  t.equal(r.status, 'rejected', 'the shrink is refused')
  if (r.status === 'rejected') t.match((r.reason as Error).message, /block 40 .* past the new end was written/)
  t.equal(s.sizeBytes, 64 * B, 'the size stays')
  t.ok((await s.readSnapshot('keep', 40 * B, B)).equals(blk('P')), 'the snapshot reads block 40')
  t.ok((await s.read(40 * B, B)).equals(Buffer.alloc(B)), 'the current image reads it trimmed')
})
