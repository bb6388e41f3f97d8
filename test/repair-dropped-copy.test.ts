import path from 'node:path'
import t from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { segmentFileName } from '../src/store/format'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, failingHandle, scratchDir, tagBlock } from './helpers/sim-layer'
import { threeVolumeStore } from './helpers/mirrored-sim-store'

/**
 * A mirror repair racing a write that drops a copy of the current segment (found by the
 * simulation, seed 13200120 with index rebuilds after power losses, drains that discard the
 * segment made ahead and bring-back: test sim-seed-13200120). The repair read the volumes a
 * segment's record names, then checked each copy's header (I/O: writes go on meanwhile).
 * There a write to the current segment failed on one copy, which the mirror dropped (the
 * record took it out; the write was acknowledged from the other copy), and the check of the
 * other, up-to-date copy met a passing read error. The repair went on from the names it read
 * first: the copy that had fallen behind was the one "present", it sealed the segment,
 * copied that stale file over the up-to-date one (chosen as the volume lacking a copy) and
 * recorded both. The acknowledged write was gone: reads ended before its data ("seg-4.log
 * ends before block 260's data").
 *
 * Now a segment the repair will copy is sealed first (from then on no append or sync drops a
 * copy of it) and its copies are judged again from its record as it is then: a copy the
 * store dropped is never a source.
 *
 * Here: segment 0 is current on [v1, v2]. The repair's header check of v1 (the first named)
 * is where the write comes: its write to v2 fails (v2 dropped, the write acknowledged from
 * v1), then the check itself fails once (EIO). The place callback offers the first volume
 * not excluded: v1, the up-to-date copy's volume.
 */
const B = 4096
const SEG = 258 * B
const SIZE = 512 * B

class RaceLayer extends PassThroughLayer {
  /** Called on the next open of v1's segment-0 file for reading (the repair's header check), then thrown as EIO. */
  onCheck: (() => Promise<void>) | undefined
  /** Fails the next write to v2's segment-0 file. */
  failV2Write = false

  async open (file: string, create: boolean): Promise<FileHandle> {
    const seg0 = path.basename(file) === segmentFileName(0)
    if (seg0 && !create && file.includes(`${path.sep}vol-v1${path.sep}`) && this.onCheck !== undefined) {
      const run = this.onCheck
      this.onCheck = undefined
      await run()
      throw Object.assign(new Error(`EIO: open ${file} (test: a passing read error)`), { code: 'EIO' })
    }
    const h = await this.sim.open(file, create)
    if (!seg0 || !file.includes(`${path.sep}vol-v2${path.sep}`)) return h
    return failingHandle(h, 'writev', () => { const now = this.failV2Write; this.failV2Write = false; return now }, 'EIO: write to v2 (test)')
  }
}

t.test('a repair never copies from a copy the store dropped while it judged the segment', async t => {
  const dir = scratchDir(t, 'repair-dropped')
  const sim = new SimFileLayer()
  const layer = new RaceLayer(sim)
  const { volumes, open, model, put } = await threeVolumeStore(dir, sim, layer, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG })
  const place = async (_id: number, exclude: string[]): Promise<string> => volumes.find(v => !exclude.includes(v))!

  let s = await open()
  for (let b = 0; b < 10; b++) await put(s, b, `A${b}`)
  await s.flush()
  t.same(s.volumesOf(0), ['v1', 'v2'], 'segment 0 is current, on v1 and v2')

  layer.onCheck = async () => {
    layer.failV2Write = true
    await put(s, 10, 'B10') // acknowledged: v1 took it, v2 failed and was dropped
    t.same(s.volumesOf(0), ['v1'], 'the write dropped v2: the record names v1 alone')
  }
  await s.repairCopies(2, place)
  t.equal(layer.onCheck, undefined, 'the write came while the repair checked the copies')
  await s.flush()
  t.ok((await s.read(0, SIZE)).equals(model), 'every acknowledged write reads back after the repair')
  const copyOn = (v: string): Buffer | undefined => sim.readFile(path.join(dir, `vol-${v}`, segmentFileName(0)))
  t.ok(copyOn('v1')?.includes(tagBlock('B10', B)) === true, 'the up-to-date copy on v1 still holds the write')
  // Judged again once sealed, the repair made the missing copy from v1 (over the stale v2).
  t.same([...(s.volumesOf(0) ?? [])].sort(), ['v1', 'v2'], 'segment 0 has two copies again')
  t.ok(copyOn('v2')?.equals(copyOn('v1')!) === true, 'both copies are equal')
  t.equal((await s.repairCopies(2, place)).made, 0, 'a second repair finds nothing to do')
  t.same((await s.verify({ copies: 2 })).problems, [], 'verify (2 copies) is clean')
  await s.close()

  s = await open()
  t.ok((await s.read(0, SIZE)).equals(model), 'every write reads back after a reopen')
  t.same((await s.verify({ copies: 2 })).problems, [], 'verify (2 copies) is clean after a reopen')
  await s.close()
})
