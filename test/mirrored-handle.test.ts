import t from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { silentLogger } from '../src/store/logger'
import { MirroredHandle } from '../src/store/mirrored-handle'

/**
 * A mirrored segment under concurrent operations. Found by the simulation (seed 2017, once
 * segments were made ahead of their roll): a write failing on copy b while a flush's
 * fdatasync failed on copy a dropped both copies; the handle then reported every later write
 * as done (no copy to fail) and every read threw `undefined`. An operation must succeed on a
 * copy that is still kept, and the last copy is never dropped.
 */
class FakeHandle implements FileHandle {
  data = Buffer.alloc(0)
  closed = false
  /** The next writev / datasync fails with this, when set. */
  failWrite: Error | undefined
  failSync: Error | undefined
  /** Operations wait for this: released at once, their outcomes are all in before any is acted on. */
  gate: Promise<void> | undefined

  async read (buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    if (this.closed) throw new Error('EBADF')
    return this.data.copy(buf, bufOffset, position, Math.min(position + length, this.data.length))
  }

  async writev (buffers: Buffer[], position: number): Promise<void> {
    await this.gate
    if (this.closed) throw new Error('EBADF')
    if (this.failWrite) throw this.failWrite
    const bytes = Buffer.concat(buffers)
    if (this.data.length < position + bytes.length) this.data = Buffer.concat([this.data, Buffer.alloc(position + bytes.length - this.data.length)])
    bytes.copy(this.data, position)
  }

  async datasync (): Promise<void> {
    await this.gate
    if (this.closed) throw new Error('EBADF')
    if (this.failSync) throw this.failSync
  }

  async truncate (length: number): Promise<void> { this.data = this.data.subarray(0, length) }
  async size (): Promise<number> { return this.data.length }
  async close (): Promise<void> { this.closed = true }
}

t.test('a write failing on one copy while an fdatasync fails on the other: one copy stays, nothing is reported done that is not kept', async t => {
  const a = new FakeHandle()
  const b = new FakeHandle()
  const dropped: string[] = []
  const m = new MirroredHandle([{ volume: 'a', file: 'a/seg', handle: a }, { volume: 'b', file: 'b/seg', handle: b }], silentLogger, v => { dropped.push(v) })
  await m.writev([Buffer.from('first')], 0)
  b.failWrite = new Error('EIO on b')
  a.failSync = new Error('EIO on a')
  let release = (): void => {}
  a.gate = b.gate = new Promise<void>(resolve => { release = resolve })
  const pending = Promise.allSettled([m.writev([Buffer.from('second')], 5), m.datasync()])
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) // both operations reach every copy
  release()
  const results = await pending
  t.equal(m.copies.length, 1, `one copy is kept (dropped: ${dropped.join(', ')})`)
  const kept = m.copies[0].handle as FakeHandle
  const wrote = results[0].status === 'fulfilled'
  t.equal(kept.data.subarray(5).toString() === 'second', wrote, 'the write reports success only if the kept copy has its bytes')
  t.equal(results.filter(r => r.status === 'rejected').length, 1, 'the operation whose only good copy was dropped fails')
  const buf = Buffer.alloc(5)
  t.equal(await m.read(buf, 0, 5, 0), 5, 'reads still work')
  t.equal(buf.toString(), 'first')
})

t.test('every copy failing: the operation fails and the last copy is kept', async t => {
  const a = new FakeHandle()
  const b = new FakeHandle()
  const m = new MirroredHandle([{ volume: 'a', file: 'a/seg', handle: a }, { volume: 'b', file: 'b/seg', handle: b }], silentLogger)
  a.failWrite = new Error('EIO on a')
  b.failWrite = new Error('EIO on b')
  await t.rejects(m.writev([Buffer.from('x')], 0), /EIO on a/, 'the write fails')
  t.equal(m.copies.length, 2, 'nothing dropped: no copy is better than another')
  a.failWrite = undefined
  await m.writev([Buffer.from('y')], 0)
  t.same(m.copies.map(c => c.volume), ['a'], 'a later write that works on a drops b only')
  b.failWrite = undefined
  a.failWrite = new Error('EIO on a again')
  await t.rejects(m.writev([Buffer.from('z')], 1), /EIO on a again/, 'with one copy left, its failure is the write\'s')
  t.equal(m.copies.length, 1, 'the last copy is never dropped')
})

t.test('no copy left: operations fail with IO, not silently and not with undefined', async t => {
  const m = new MirroredHandle([], silentLogger)
  await t.rejects(m.writev([Buffer.from('x')], 0), { code: 'IO' }, 'a write fails')
  await t.rejects(m.datasync(), { code: 'IO' }, 'a sync fails')
  await t.rejects(m.read(Buffer.alloc(1), 0, 1, 0), { code: 'IO' }, 'a read fails')
})
