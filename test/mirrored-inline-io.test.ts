import t from 'tap'
import type { FileHandle, FileLayer } from '../src/store/file-layer'
import { failingHandle, mirroredStore, PassThroughLayer, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * A mirrored segment serves inline reads and writes (IoOptions.inline: a synchronous call on
 * the event loop) and page-cache reads beside others (readCached) as a single copy does:
 * MirroredHandle had none of them, so every read and write of a mirrored store went through
 * the thread pool. A copy whose synchronous read fails is passed over for the next, as `read`
 * does; one whose synchronous write fails is dropped, as `writev` drops it.
 */
const B = 4096
const GEOMETRY = { sizeBytes: 4 * 1024 * 1024, blockBytes: B, segmentBytes: 2 * 1024 * 1024 }

/** Handles of copies on volume v1 whose synchronous call `op` fails with EIO while `failing.on`. */
class FailingV1Layer extends PassThroughLayer {
  readonly failing = { on: false, failed: 0, op: 'readNow' as 'readNow' | 'writevNow' }
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    if (!file.includes('/vol-v1/')) return h
    const failing = this.failing
    return failingHandle(h, failing.op, () => failing.on && ++failing.failed > 0, `EIO: injected ${failing.op} error on v1`)
  }
}

t.test('inline reads of a mirrored segment are synchronous, and pass over a copy that fails', async t => {
  const dir = scratchDir(t, 'mirrored-inline')
  const { sim, openOn } = await mirroredStore(dir, GEOMETRY)
  const layer = new FailingV1Layer(sim)
  const s = await openOn(layer as FileLayer)
  for (let b = 0; b < 16; b++) await s.write(b * B, tagBlock(`m${b}`, B))
  await s.flush()
  t.same(s.volumesOf(0), ['v1', 'v2'], 'segment 0 is mirrored on both volumes')
  const before = s.inlineIo.reads
  for (let b = 0; b < 16; b++) t.ok((await s.read(b * B, B, undefined, { inline: true })).equals(tagBlock(`m${b}`, B)), `block ${b} reads back inline`)
  t.equal(s.inlineIo.reads - before, 16, 'every one was a synchronous read (before: none, the mirrored handle had no readNow)')
  layer.failing.on = true
  for (let b = 0; b < 16; b++) t.ok((await s.read(b * B, B, undefined, { inline: true })).equals(tagBlock(`m${b}`, B)), `block ${b} reads back from v2 while v1's reads fail`)
  t.ok(layer.failing.failed >= 16, 'the failing copy was asked first')
  t.same(s.volumesOf(0), ['v1', 'v2'], 'a failed read drops no copy (as an asynchronous read)')
  layer.failing.on = false
  await s.close()
})

t.test('inline writes of a mirrored segment are synchronous on every copy, and drop a copy that fails', async t => {
  const dir = scratchDir(t, 'mirrored-inline-w')
  const { sim, openOn } = await mirroredStore(dir, GEOMETRY)
  const layer = new FailingV1Layer(sim)
  layer.failing.op = 'writevNow'
  let s = await openOn(layer as FileLayer)
  const before = s.inlineIo.writes
  for (let b = 0; b < 16; b++) await s.write(b * B, tagBlock(`w${b}`, B), undefined, { inline: true })
  // The first change to a segment runs through the pool: it makes the copies' lengths match first.
  t.ok(s.inlineIo.writes - before >= 15, `${s.inlineIo.writes - before} of 16 writes were synchronous (before: none)`)
  await s.flush()
  t.ok(sim.readFile(`${dir}/vol-v1/seg-000000000000.log`)!.equals(sim.readFile(`${dir}/vol-v2/seg-000000000000.log`)!), 'both copies hold the same bytes')
  layer.failing.on = true
  await s.write(20 * B, tagBlock('x', B), undefined, { inline: true })
  t.equal(layer.failing.failed, 1, 'the write failed on v1')
  layer.failing.on = false
  await s.flush()
  t.same(s.volumesOf(0), ['v2'], 'v1 is dropped from the segment\'s record before the flush returns')
  for (let b = 0; b < 16; b++) t.ok((await s.read(b * B, B)).equals(tagBlock(`w${b}`, B)), `block ${b} reads back`)
  t.ok((await s.read(20 * B, B)).equals(tagBlock('x', B)), 'the write that dropped v1 reads back')
  await s.close()
  s = await openOn(layer as FileLayer)
  t.ok((await s.read(20 * B, B)).equals(tagBlock('x', B)), 'and after a reopen')
  t.same(s.volumesOf(0), ['v2'], 'the reopened store names v2 alone')
  await s.close()
})
