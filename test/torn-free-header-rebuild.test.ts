import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { FileHandle } from '../src/store/file-layer'
import { ENTRY_HEADER_BYTES, SEGMENT_HEADER_BYTES, segmentFileName } from '../src/store/format'
import { Store } from '../src/store/store'
import { SimFileLayer } from '../src/testing/sim-file-layer'
import { PassThroughLayer, failingHandle, scratchDir, tagBlock } from './helpers/sim-layer'

/**
 * A free header torn by a power loss, and the index lost too (found by the simulation, seed
 * 12353033 with index rebuilds after power losses: test sim-seed-12353033). Compaction frees
 * a run of dead entries by writing a free header over the run's first entry header, in place;
 * a power loss can tear it. The header writes were recorded first in the index alone (its 'p'
 * key), and open redid them from there; with the index lost as well, a full rebuild scanned
 * the torn header, took it for damage and read nothing more of that segment: every later
 * entry in it was lost, live ones included (there a trim, so a block read an older version
 * from the baseline). The record is now a file beside the index (pending-headers.ts), which a
 * rebuild redoes first.
 *
 * Here: segment 0 holds [blocks 0-4, v1] [blocks 5-9, v1] [trim of block 7] and filler; blocks
 * 0-4 are overwritten, so compaction frees the first entry. Its free header write goes
 * through, the segment's fdatasync fails (the power fails there), the header is left torn
 * (its first bytes new, the rest old); the store is abandoned and its index deleted.
 */
const B = 4096
const SEG = 258 * B
const SIZE = 1024 * B

class FailSegmentSync extends PassThroughLayer {
  armed = false
  async open (file: string, create: boolean): Promise<FileHandle> {
    const h = await this.sim.open(file, create)
    if (path.basename(file) !== segmentFileName(0)) return h
    return failingHandle(h, 'datasync', () => { const now = this.armed; this.armed = false; return now }, 'EIO: the power failed (test)')
  }
}

t.test('a torn free header is redone before a full rebuild: the entries after it survive', async t => {
  const dir = scratchDir(t, 'torn-free-header')
  const sim = new SimFileLayer()
  const layer = new FailSegmentSync(sim)
  await Store.create(dir, { sizeBytes: SIZE, blockBytes: B, segmentBytes: SEG }, sim)
  const open = (): Promise<Store> => Store.open(dir, { fileLayer: layer, checkpointIntervalMs: 0, historyKeepMs: 0 })
  const model = Buffer.alloc(SIZE)
  const put = async (s: Store, block: number, count: number, tag: string): Promise<void> => {
    const data = Buffer.concat(Array.from({ length: count }, (_, i) => tagBlock(`${tag}${block + i}`, B)))
    await s.write(block * B, data)
    data.copy(model, block * B)
  }
  const s = await open()
  await put(s, 0, 5, 'A')
  await put(s, 5, 5, 'A')
  await s.discard(7 * B, B)
  model.fill(0, 7 * B, 8 * B)
  for (let n = 0; s.logSegments().length < 2; n++) await put(s, 100 + (n % 500), 1, 'F')
  await put(s, 0, 5, 'B') // the first entry of segment 0 is dead now
  await s.flush()

  const seg = path.join(dir, 'segments', segmentFileName(0))
  const old = sim.readFile(seg)!.subarray(SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES + ENTRY_HEADER_BYTES)
  layer.armed = true
  const failed = await s.compact({ cleanBelow: 0 }).then(() => undefined, (err: Error) => err)
  t.ok(failed, `the compaction failed at the segment's fdatasync (${failed?.message})`)
  const written = sim.readFile(seg)!.subarray(SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES + ENTRY_HEADER_BYTES)
  t.notOk(written.equals(old), 'the free header was written over the first entry header')
  // Torn: the first 24 bytes of the new header reached the disk, the rest is the old one.
  sim.poke(seg, SEGMENT_HEADER_BYTES + 24, old.subarray(24))
  await s.abandon()
  fs.rmSync(path.join(dir, 'index'), { recursive: true, force: true })

  const again = await open()
  t.ok(again.recovery.rebuiltIndex, 'the index was rebuilt from the log')
  t.same(again.recovery.damaged, [], 'no damage: the torn header was redone before the scan')
  t.ok((await again.read(0, SIZE)).equals(model), 'every acknowledged write and trim reads back (blocks 5-9, block 7 trimmed)')
  t.same((await again.verify()).problems, [], 'verify is clean')
  await again.close()
})
