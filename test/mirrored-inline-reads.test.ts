import t from 'tap'
import type { FileHandle, FileLayer } from '../src/store/file-layer'
import { mirroredStore, PassThroughLayer, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * A mirrored segment serves inline reads (IoOptions.inline: a synchronous read on the event
 * loop) and page-cache reads beside others (readCached) as a single copy does: MirroredHandle
 * had neither, so every read of a mirrored store went through the thread pool. A copy whose
 * synchronous read fails is passed over for the next, as `read` does.
 */
const B = 4096
const GEOMETRY = { sizeBytes: 4 * 1024 * 1024, blockBytes: B, segmentBytes: 2 * 1024 * 1024 }

/** Handles of copies on volume v1 whose readNow fails with EIO while `failing.on`. */
class FailingV1Layer extends PassThroughLayer {
  readonly failing = { on: false, failed: 0 }
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    if (!file.includes('/vol-v1/')) return h
    const failing = this.failing
    return new Proxy(h, {
      get (target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver)
        if (typeof v !== 'function') return v
        if (prop !== 'readNow') return v.bind(target)
        return (...args: [Buffer, number, number, number]) => {
          if (failing.on) {
            failing.failed++
            throw Object.assign(new Error('EIO: injected read error on v1'), { code: 'EIO' })
          }
          return v.apply(target, args)
        }
      }
    })
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
