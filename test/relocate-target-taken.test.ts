import path from 'node:path'
import t from 'tap'
import { isLogdiskError } from '../src/errors'
import { segmentFileName } from '../src/store/format'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { scratchDir } from './helpers/sim-layer'
import { threeVolumeStore } from './helpers/mirrored-sim-store'

/**
 * A drain's move onto a volume that got a copy of the segment while the move waited for the
 * maintenance lock (found by the simulation, seed 12346031 with bring-back on: test
 * sim-seed-12346031). A pool drain chooses the target of each move (a volume with room that
 * holds no copy of the segment), then calls Store.relocateSegment, which waits for the
 * maintenance lock; a mirror repair that held the lock meanwhile put the segment's missing
 * copy on that very volume. The move then copied the segment onto it again and recorded the
 * segment's volumes as [v3, v3]: two "copies" that are one file. The one other copy was
 * deleted. The mirrored handle then wrote every change twice to one file, and when a write
 * to it failed, dropping that "copy" dropped both: the simulation's store lost every copy of
 * a segment holding acknowledged writes ("segment 4 has no copy on any pool volume").
 *
 * Now the move is refused (BUSY) when the target already holds a copy, and changes nothing;
 * the drain (Pool.drain, and the simulation's) chooses again.
 */
const B = 4096
const SEG = 258 * B
const SIZE = 512 * B

t.test('a move onto a volume that got a copy meanwhile is refused and changes nothing', async t => {
  const dir = scratchDir(t, 'relocate-taken')
  const sim = new SimFileLayer()
  const { open, model, put } = await threeVolumeStore(dir, sim, sim, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  let s = await open()
  for (let b = 0; b < 10; b++) await put(s, b, `A${b}`)
  await s.flush()
  sim.failNext('writev', 'EIO') // one I/O error, on copy v1: v1 is dropped, v2 carries on
  await put(s, 10, 'A10')
  await s.flush()
  t.same(s.volumesOf(0), ['v2'], 'segment 0 is degraded: one copy, on v2')
  for (let n = 0; s.logSegments().length < 3; n++) await put(s, 20 + (n % 300), `F${n}`) // segment 0 sealed
  await s.flush()

  // A drain of v2 chose v3 for segment 0 (room, no copy there); a repair runs first and puts
  // the missing copy on v3; then the move runs.
  const repair = s.repairCopies(2, async () => 'v3')
  const move = s.relocateSegment(0, 'v2', 'v3').then(() => 'moved', (err: Error) => err)
  t.equal((await repair).made, 1, 'the repair made one copy')
  const outcome = await move
  t.ok(isLogdiskError(outcome, 'BUSY'), `the move is refused with BUSY (got ${outcome instanceof Error ? outcome.message : outcome})`)
  const seg = segmentFileName(0)
  t.same([...(s.volumesOf(0) ?? [])].sort(), ['v2', 'v3'], 'segment 0 has two copies, on two volumes')
  const v2 = sim.readFile(path.join(dir, 'vol-v2', seg))
  const v3 = sim.readFile(path.join(dir, 'vol-v3', seg))
  t.ok(v2 !== undefined && v3 !== undefined && v2.equals(v3), 'both copies are there, equal')

  // The drain chooses again (a volume with room and no copy) and the move goes through.
  await s.relocateSegment(0, 'v2', 'v1')
  t.same([...(s.volumesOf(0) ?? [])].sort(), ['v1', 'v3'], 'moved off v2 onto v1, the copy on v3 kept')
  t.equal(sim.readFile(path.join(dir, 'vol-v2', seg)), undefined, 'the copy on v2 is gone')
  t.ok((await s.read(0, SIZE)).equals(model), 'every write reads back')
  t.same((await s.verify({ copies: 2 })).problems, [], 'verify (2 copies) is clean')
  await s.close()

  s = await open()
  t.ok((await s.read(0, SIZE)).equals(model), 'every write reads back after a reopen')
  t.same([...(s.volumesOf(0) ?? [])].sort(), ['v1', 'v3'], 'the index still names v1 and v3')
  t.same((await s.verify({ copies: 2 })).problems, [], 'verify (2 copies) is clean after a reopen')
  await s.close()
})
