import path from 'node:path'
import t, { type Test } from 'tap'
import type { Store } from '../src/store/store'
import type { FileLayer } from '../src/store/file-layer'
import type { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, mirroredStore, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * An open removes copies of a segment on volumes its index record does not name (store-open.ts
 * removeUnnamedCopies): a full rebuild, which has no record, took such a copy (dropped long
 * before) over the good one (simulation seed 17100006). But never the only copies there are.
 * (A running store removes a dropped copy itself once the drop is on record; the open is
 * what is left when that removal failed or a crash came first.)
 */
const B = 4096
const SIZE = 1024 * B
const SEG = 258 * B
const SEG0 = 'seg-000000000000.log'

/** Refuses to remove files on v1 (EIO): the volume that fails. */
class NoRemoveOnV1 extends PassThroughLayer {
  async remove (file: string): Promise<void> {
    if (file.includes(`${path.sep}vol-v1${path.sep}`)) throw Object.assign(new Error(`EIO: remove ${file} (test)`), { code: 'EIO' })
    return await this.sim.remove(file)
  }
}

async function droppedCopy (t: Test): Promise<{ sim: SimFileLayer, dir: string, open: () => Promise<Store>, openOn: (layer: FileLayer) => Promise<Store> }> {
  const dir = scratchDir(t, 'logdisk-unnamed')
  const { sim, open, openOn } = await mirroredStore(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  // The store removes a copy once its drop is on record (segment-table.ts); here v1 refuses
  // that removal, as a failing volume may, so the copy is still there for the next open.
  const s = await openOn(new NoRemoveOnV1(sim))
  for (let b = 0; b < 10; b++) await s.write(b * B, tagBlock(`A${b}`, B))
  await s.flush()
  sim.failNext('writev', 'EIO') // copy v1 fails a write: dropped, recorded
  for (let b = 0; b < 10; b++) await s.write(b * B, tagBlock(`B${b}`, B))
  // On into segment 1 (both copies), so that the index's checkpoint is there, not in segment 0.
  for (let b = 10; s.volumesOf(1) === undefined; b++) await s.write(b * B, tagBlock(`C${b}`, B))
  await s.flush()
  await s.checkpoint()
  t.same(s.volumesOf(0), ['v2'], 'the index names v2 alone for segment 0')
  t.same(s.volumesOf(1), ['v1', 'v2'], 'and both for segment 1')
  await s.close()
  return { sim, dir, open, openOn }
}

t.test('the next open removes the dropped copy, and the store reads as before', async t => {
  const { sim, dir, open } = await droppedCopy(t)
  t.ok(sim.readFile(path.join(dir, 'vol-v1', SEG0)), 'the dropped copy is there before the open')
  const s = await open()
  t.equal(sim.readFile(path.join(dir, 'vol-v1', SEG0)), undefined, 'and gone after it')
  for (let b = 0; b < 10; b++) t.equal((await s.read(b * B, 2)).toString(), `B${b}`, `block ${b}`)
  t.same(s.volumesOf(0), ['v2'])
  await s.close()
})

t.test('with no recorded copy found, the open keeps the copy there is', async t => {
  const { sim, dir, open } = await droppedCopy(t)
  await sim.remove(path.join(dir, 'vol-v2', SEG0)) // the disk of the recorded copy is lost
  const s = await open().catch((err: Error) => err)
  t.ok(sim.readFile(path.join(dir, 'vol-v1', SEG0)), `the stale copy on v1 stays (the open ${s instanceof Error ? `failed: ${s.message}` : 'succeeded'})`)
  if (!(s instanceof Error)) await s.close()
})

t.test('an open whose removal of the dropped copy fails too opens anyway, and reads as before', async t => {
  const { sim, dir, openOn } = await droppedCopy(t)
  const s = await openOn(new NoRemoveOnV1(sim)).catch((err: Error) => err)
  t.notOk(s instanceof Error, `the open succeeds (${s instanceof Error ? s.message : 'it did'})`)
  if (s instanceof Error) return
  t.ok(sim.readFile(path.join(dir, 'vol-v1', SEG0)), 'the stale copy is still there (the volume refused)')
  for (let b = 0; b < 10; b++) t.equal((await s.read(b * B, 2)).toString(), `B${b}`, `block ${b}`)
  t.same(s.volumesOf(0), ['v2'], 'the index still names v2 alone')
  await s.close()
})
