import path from 'node:path'
import t, { type Test } from 'tap'
import type { Store } from '../src/store/store'
import type { SimFileLayer } from '../src/testing/sim-file-layer'
import { mirroredStore, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * An open removes copies of a segment on volumes its index record does not name (store-open.ts
 * removeUnnamedCopies): a full rebuild, which has no record, took such a copy (dropped long
 * before) over the good one (simulation seed 17100006). But never the only copies there are.
 */
const B = 4096
const SIZE = 1024 * B
const SEG = 258 * B
const SEG0 = 'seg-000000000000.log'

async function droppedCopy (t: Test): Promise<{ sim: SimFileLayer, dir: string, open: () => Promise<Store> }> {
  const dir = scratchDir(t, 'logdisk-unnamed')
  const { sim, open } = await mirroredStore(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const s = await open()
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
  return { sim, dir, open }
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
